"""AppTest of the app shell: sidebar, home page, unavailable models, the page list.

AppTest drops the sidebar's elements from its tree on a rerun when the app uses ``st.navigation``
(the real app is fine), so sidebar choices are set through session state before a first run
(the ``app`` fixture of ``conftest.py``).
"""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_home_shows_prediction_for_the_default(at):
    at.run()
    assert not at.exception
    assert at.sidebar.selectbox(key="model_id").value == "shapes-resnet"
    assert at.title[0].value == "Image & prediction"
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    assert "shapes-resnet" in at.caption[0].value


def test_every_sample_predicts_without_error(at, app):
    at.run()
    n = len(at.sidebar.selectbox(key="sample").options)
    assert n >= 4
    for k in range(n):
        a = app(sample=k).run()
        assert not a.exception
        assert not a.error, [e.value for e in a.error]
        assert len(a.get("plotly_chart")) == 1


def test_unavailable_model_shows_reason_not_traceback(app, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("EXPLAINERS_OFFLINE", "1")
    a = app(model_id="tv-resnet50").run()
    assert not a.exception
    assert a.sidebar.warning and "hub cache" in a.sidebar.warning[0].value
    assert a.info  # the page says why it cannot run instead of failing


def test_digit_classifier_on_a_digit_sample(at, app):
    at.run()
    opts = at.sidebar.selectbox(key="sample").options
    digit = [k for k, o in enumerate(opts) if "digit" in o.lower()]
    assert digit
    a = app(model_id="digits-cnn", sample=digit[0]).run()
    assert not a.exception and len(a.get("plotly_chart")) == 1
    assert "digits-cnn" in a.caption[0].value


def _listed_pages() -> list[str]:
    tree = ast.parse((ROOT / "app.py").read_text())
    node = next(n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "PAGES")
    return [t.elts[0].value for t in node.value.elts]


def test_app_lists_every_page_file():
    assert sorted(_listed_pages()) == sorted(f"pages/{p.name}" for p in (ROOT / "pages").glob("*.py"))


def test_a_missing_page_file_stops_the_app_with_its_name(tmp_path):
    """A renamed page must not silently drop out of the navigation."""
    from streamlit.testing.v1 import AppTest

    shutil.copy(ROOT / "app.py", tmp_path / "app.py")
    (tmp_path / "pages").mkdir()
    for page in _listed_pages():
        if page != "pages/compare.py":
            (tmp_path / page).write_text("import streamlit as st\nst.write('stub')\n")
    a = AppTest.from_file(str(tmp_path / "app.py"), default_timeout=60).run()
    assert a.exception and "pages/compare.py" in a.exception[0].value


def _sample_index(a, text: str) -> int:
    return next(k for k, o in enumerate(a.sidebar.selectbox(key="sample").options) if text in o)


def test_the_classifier_follows_the_image_until_the_user_picks_one(at, app):
    """default_for: a photograph gets the ImageNet network, a built-in 64-px sample shapes-resnet,
    a digit the digit classifier; a model the user picked stays. (AppTest loses the sidebar's
    widgets on reruns, so each case is a fresh session; the browser test changes them live.)"""
    from explainers.classifiers import default_for
    from explainers.data.samples import get_sample

    at.run()
    options = at.sidebar.selectbox(key="sample").options
    assert {"Coffee cup (photograph)", "Chelsea the cat (photograph)", "Rocket on the pad (photograph)",
            "Astronaut (photograph)"} <= set(options)
    assert at.session_state["model_id"] == "shapes-resnet"
    coffee, digit = _sample_index(at, "Coffee"), _sample_index(at, "Digit")
    a = app(sample=coffee).run()
    assert not a.exception and not a.warning, [w.value for w in a.warning]  # a photograph: no size warning
    assert a.session_state["model_id"] == default_for(get_sample("photos/coffee").image) == "efficientnet-lite0"
    assert "efficientnet-lite0" in a.caption[0].value
    assert app(sample=digit).run().session_state["model_id"] == "digits-cnn"
    picked = app(sample=coffee, model_id="shapes-vgg").run()
    assert not picked.exception and picked.session_state["model_id"] == "shapes-vgg"
    assert "shapes-vgg" in picked.caption[0].value


def test_a_tiny_or_very_wide_image_is_classified_with_a_warning_above(app, monkeypatch):
    import io

    from PIL import Image

    import ui.sidebar

    def png(w, h):
        buf = io.BytesIO()
        Image.new("RGB", (w, h), (200, 30, 30)).save(buf, format="PNG")
        return buf.getvalue()

    fake = [("tiny", "Tiny", png(1, 1), "", (1, 1)), ("wide", "Wide", png(640, 64), "", (640, 64)),
            ("plain", "Plain", png(64, 64), "", (64, 64))]
    monkeypatch.setattr(ui.sidebar, "_samples", lambda: fake)
    for k, words in enumerate(["1×1", "10:1", None]):
        a = app(sample=k, model_id="shapes-resnet").run()
        assert not a.exception
        assert len(a.get("plotly_chart")) == 1  # still classified
        if words is None:
            assert not a.warning
        else:
            assert len(a.warning) == 1 and words in a.warning[0].value and "\n" not in a.warning[0].value
            main = list(a.main)
            assert main.index(a.warning[0]) < main.index(a.get("plotly_chart")[0])  # above the prediction


def test_another_classifier_or_image_clears_the_class_boxes_and_stops_the_old_work(app):
    """When the sidebar's classifier, device or image differs from the last run's, the app cancels
    the session's work and drops the class boxes before the page draws. AppTest runs app.py itself
    only on the first run (later runs go to the page), so that run is made to follow another
    context: a class chosen and a job running for it."""
    from ui import widgets, work

    old = work.Job(key="old", label="old", estimate=None)
    a = app(**{"compare.methods": ["gradcam"], "target": 3, widgets._CONTEXT: {"target"}, work._JOBS: {"grid.rise": old},
               "sidebar.last": ("another-model", "cpu", "another-image")})
    a.run()
    a.switch_page("pages/compare.py").run()
    assert not a.exception
    ctx = a.session_state["ctx"]
    import ui.cache

    top = ui.cache.predict(ctx.model_id, ctx.device, ctx.png, 1)[0][0]
    assert top != 3 and a.selectbox(key="target").value == top  # the top class again, not the old choice
    assert old.cancel.is_set() and "grid.rise" not in a.session_state[work._JOBS]


def test_settings_are_kept_across_pages(at, pages):
    pages.open(at, "pages/mipin.py")
    at.select_slider(key="mipin.lam").set_value(0.01).run()
    at.checkbox(key="mipin.frelu").uncheck().run()
    at.switch_page("pages/home.py").run()
    at.switch_page("pages/mipin.py").run()
    assert not at.exception
    assert at.select_slider(key="mipin.lam").value == 0.01 and at.checkbox(key="mipin.frelu").value is False
