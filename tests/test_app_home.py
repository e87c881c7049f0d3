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
