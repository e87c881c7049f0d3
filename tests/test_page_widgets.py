"""The page scaffold's parts on their own: widgets built from a config's metadata (``ui.widgets``),
the progress runner and the one-line messages (``ui.page``), the grid's method list."""
from __future__ import annotations

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest


def _config_script():
    import dataclasses
    from typing import Optional

    import streamlit as st

    from explainers.config import knob
    from ui.widgets import config_inputs

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        mode: str = knob("a", "which mode", choices=("a", "b"))
        eta: float = knob(1.5, "η, steepness (paper: 1.5)", min=0.1, max=5.0, step=0.05, symbol="η")
        steps: int = knob(60, "optimisation steps", min=1)
        sigma: Optional[float] = knob(None, "blur σ; empty = side/16", min=0.0, auto="side/16", symbol="σ")
        pick: Optional[str] = knob(None, "a choice or automatic", choices=("x", "y"), auto="auto")
        plain: float = 0.5  # no metadata at all
        flag: bool = True
        path: Optional[str] = None
        deep: int = knob(3, "an advanced knob", min=1, max=9, advanced=True)

    st.session_state["out"] = config_inputs(Cfg, key="t.")


def _config_app() -> AppTest:
    return AppTest.from_function(_config_script, default_timeout=60).run()


def test_config_widgets_follow_the_fields_metadata():
    a = _config_app()
    assert not a.exception, a.exception
    assert a.selectbox(key="t.mode").value == "a" and a.selectbox(key="t.mode").proto.help == "which mode (default a)"
    eta = a.slider(key="t.eta")  # both ends given: a slider, labelled with the paper's symbol
    assert eta.value == 1.5 and (eta.min, eta.max) == (0.1, 5.0) and "η" in eta.label and "paper: 1.5" in eta.proto.help
    assert a.number_input(key="t.steps").value == 60  # one end only: a number input
    assert "default 60" in a.number_input(key="t.steps").proto.help  # the help says the default when the text does not
    sigma = a.number_input(key="t.sigma")  # None with an auto word: empty, the word shown, never 0.00
    assert sigma.value is None and sigma.proto.placeholder == "side/16"
    pick = a.selectbox(key="t.pick")
    assert pick.value is None and pick.options[0] == "auto"
    assert a.number_input(key="t.plain").value == 0.5 and a.checkbox(key="t.flag").value is True
    assert a.text_input(key="t.path").value == ""
    assert "t.deep" not in [w.key for w in a.slider]  # advanced: behind the checkbox
    assert a.session_state["out"] == {}  # nothing changed from the defaults


def test_config_widgets_return_only_what_changed():
    a = _config_app()
    a.slider(key="t.eta").set_value(2.0).run()
    a.number_input(key="t.sigma").set_value(3.0).run()
    a.selectbox(key="t.pick").set_value("y").run()
    assert a.session_state["out"] == {"eta": 2.0, "sigma": 3.0, "pick": "y"}
    a.checkbox(key="t.advanced").check().run()
    a.slider(key="t.deep").set_value(5).run()
    assert a.session_state["out"]["deep"] == 5


def test_config_widgets_draw_every_registered_method():
    """Every method's real config gets its widgets without an error (with or without metadata)."""
    def script():
        import streamlit as st

        from explainers.core import METHODS, get_method
        from ui.widgets import config_widgets

        get_method("occlusion")
        for m in sorted(METHODS):
            st.session_state[f"out.{m}"] = config_widgets(m, key="all.")

    a = AppTest.from_function(script, default_timeout=60).run()
    assert not a.exception, a.exception
    from explainers.core import METHODS

    assert all(a.session_state[f"out.{m}"] == {} for m in METHODS)


def test_the_grid_offers_every_registered_method():
    from explainers.core import METHODS
    from ui import grid

    assert sorted(grid.available_methods()) == sorted(METHODS)
    assert grid.available_methods()[:5] == ["pmi-ig", "dssr", "varsal", "dcontrol", "mipin"]


def test_progress_runner_shows_share_and_time_left_and_clears(monkeypatch):
    from ui import page

    shown, cleared = [], []

    class Bar:
        def progress(self, share, text=""):
            shown.append((share, text))

        def empty(self):
            cleared.append(True)

    clock = iter([0.0, 0.5, 10.0, 20.0])
    monkeypatch.setattr(st, "progress", lambda share, text="": Bar())
    monkeypatch.setattr(page.time, "monotonic", lambda: next(clock))

    def work(progress):
        progress(1, 4, "layer 1")  # 0.5 s in: too early to tell the time left
        progress(2, 4)  # 10 s for half: about 10 s left
        progress(4, 4)
        return "done"

    assert page.with_progress("Sanity", work) == "done"
    assert shown[0] == (0.25, "Sanity layer 1 · 25%")
    assert shown[1] == (0.5, "Sanity · 50% · about 10 s left")
    assert shown[2][0] == 1.0 and "left" not in shown[2][1]
    assert cleared == [True]


def test_progress_runner_clears_the_bar_when_the_call_fails(monkeypatch):
    import pytest

    from explainers.errors import ExplainerError
    from ui import page

    cleared = []

    class Bar:
        def progress(self, share, text=""):
            pass

        def empty(self):
            cleared.append(True)

    monkeypatch.setattr(st, "progress", lambda share, text="": Bar())

    def boom(progress):
        raise ExplainerError("bad input")

    with pytest.raises(ExplainerError):
        page.with_progress("x", boom)
    assert cleared == [True]


def test_failure_messages_are_one_line():
    from explainers.errors import ExplainerError
    from ui import page

    assert page.failure(ExplainerError("k1=99 is larger\nthan the mask")) == "k1=99 is larger than the mask"
    assert page.failure(ExplainerError("bad"), "DSSR+") == "DSSR+: bad"
    bug = page.failure(RuntimeError("first\nsecond"), "Grad-CAM")
    assert bug == "Grad-CAM failed: RuntimeError: first second"
    assert page.failure(KeyError()) == "Failed: KeyError: KeyError"


# ------------------------------------------------------------------------------------ long work (ui.work)


def _work_script():
    """One slot of long work: ``est`` seconds expected; the work reports ``steps`` steps (with a partial
    result) and, with ``cancel_at``, is stopped there as the Stop button would stop it."""
    import streamlit as st

    from ui import work

    calls = st.session_state.setdefault("calls", [])
    steps, cancel_at, key = st.session_state.get("steps", 3), st.session_state.get("cancel_at"), st.session_state.get("key", "k")

    def job(progress):
        calls.append(key)
        for i in range(steps):
            if i == cancel_at:
                progress.__self__.cancel.set()  # what the Stop button's callback does
            progress(i + 1, steps, "step", partial={"m": [[float(i)]]})
        return f"result of {key}"

    out = work.run("demo", key, "Demo", job, st.session_state.get("est", 1.0))
    st.session_state["out"] = (out.state, out.result, out.partial, round(out.share, 2))
    st.text_input("unrelated", key="unrelated")


def _work_app(**state) -> AppTest:
    a = AppTest.from_function(_work_script, default_timeout=60)
    for k, v in state.items():
        a.session_state[k] = v
    return a.run()


def test_quick_work_runs_at_once_and_an_unrelated_widget_never_reruns_it():
    a = _work_app(key="quick-1")
    assert not a.exception, a.exception
    assert a.session_state["out"][:2] == ("done", "result of quick-1")
    a.text_input(key="unrelated").input("moved").run()
    assert a.session_state["out"][:2] == ("done", "result of quick-1")
    assert a.session_state["calls"] == ["quick-1"]  # computed once


def test_long_work_waits_for_its_run_button():
    a = _work_app(key="long-1", est=600.0)
    assert a.session_state["out"][0] == "waiting" and a.session_state["calls"] == []
    button = a.button(key="work.start.demo")
    assert "10 min" in button.label and any("starts only on a click" in c.value for c in a.caption)
    a.text_input(key="unrelated").input("moved").run()  # another widget never starts it
    assert a.session_state["out"][0] == "waiting" and a.session_state["calls"] == []
    a.button(key="work.start.demo").click().run()
    assert a.session_state["out"][:2] == ("done", "result of long-1") and a.session_state["calls"] == ["long-1"]
    a.text_input(key="unrelated").input("again").run()  # finished: never recomputed
    assert a.session_state["calls"] == ["long-1"]


@pytest.mark.parametrize("est", [1.0, lambda: 1.0], ids=["seconds", "a function"])
def test_stop_leaves_a_stopped_partial_result_until_the_next_run_replaces_it(est):
    key = f"stop-{'f' if callable(est) else 's'}"
    a = _work_app(key=key, steps=10, cancel_at=4, est=est)
    state, result, partial, share = a.session_state["out"]
    assert state == "stopped" and result is None and partial == {"m": [[3.0]]} and share == 0.4
    assert any("Stopped — partial result" in w.value for w in a.warning)
    a.text_input(key="unrelated").input("moved").run()  # stays stopped: no silent restart
    assert a.session_state["out"][0] == "stopped" and a.session_state["calls"] == [key]
    a.session_state["cancel_at"] = None
    a.button(key="work.start.demo").click().run()  # "Run again"
    assert a.session_state["out"][:2] == ("done", f"result of {key}") and not a.warning


def test_new_inputs_in_a_slot_replace_the_old_result():
    a = _work_app(key="a")
    a.session_state["key"] = "b"
    a.run()
    assert a.session_state["out"][:2] == ("done", "result of b") and a.session_state["calls"] == ["a", "b"]
    a.session_state["key"] = "a"
    a.run()
    assert a.session_state["out"][:2] == ("done", "result of a") and a.session_state["calls"] == ["a", "b"]  # memo


def test_durations_read_as_people_say_them():
    from ui.work import duration

    assert [duration(s) for s in (0.42, 12.4, 200, 7200)] == ["0.4 s", "12 s", "3 min", "2.0 h"]


# ------------------------------------------------------------------------------------ maps and inputs


def test_a_nearly_zero_map_is_drawn_muted_with_its_threshold_stated():
    import numpy as np

    from ui import plots

    tiny = np.full((4, 4), 1e-4, np.float32)
    note = plots.near_zero(tiny, "bits")
    assert "0.0001 bits" in note and "below 0.01 bits" in note
    fig = plots.map_figure(None, tiny, "positive", "bits", "IG")
    assert fig.data[0].opacity == plots.MUTED_OPACITY and fig.data[0].zmax == 0.01 and "nearly zero" in fig.layout.title.text
    assert plots.near_zero(np.ones((4, 4)), "bits") == ""
    assert plots.near_zero(np.full((4, 4), 1e-4), "logit") == ""  # no natural scale: only zeros are "nearly zero"


def test_shared_scales_are_symmetric_and_long_titles_wrap():
    import numpy as np

    from ui import plots

    a, b = np.array([[0.5, -0.2]]), np.array([[0.1, 2.0]])
    peak = plots.shared_peak([a, b])
    fa, fb = plots.map_figure(None, a, "signed", "bits", scale=peak), plots.map_figure(None, b, "positive", "bits", scale=peak)
    assert (fa.data[0].zmin, fa.data[0].zmax) == (-2.0, 2.0) and (fb.data[0].zmin, fb.data[0].zmax) == (0.0, 2.0)
    title = plots.wrap("Distribution controller (mask predictor) · mask_finetuned", 30)
    assert all(len(line) <= 30 for line in title.split("<br>")) and title.replace("<br>", " ").startswith("Distribution")


def test_input_warnings_for_tiny_and_very_wide_images(tiny_cnn):
    from ui.page import input_warning

    clf = tiny_cnn(side=64)
    assert "64× smaller" in input_warning((1, 1), clf) and "\n" not in input_warning((1, 1), clf)
    assert "10:1" in input_warning((640, 64), clf)
    assert input_warning((64, 64), clf) == "" and input_warning((500, 375), clf) == ""


def test_estimates_follow_what_finished_runs_really_took(monkeypatch):
    import explainers.cost
    from ui import cache

    monkeypatch.setattr(cache, "rates", lambda model_id, device: explainers.cost.Rates(forward=100.0, backward=100.0))
    monkeypatch.setattr(cache, "_SPEED", {})
    _, before = cache.cost("shapes-resnet", "cpu", "rise", (("masks", 1000),))
    assert before == pytest.approx(1001 / 100.0)  # 1000 masks and explain()'s own forward
    cache.learn("shapes-resnet", "cpu", "rise", before, before / 4)  # the machine was faster than measured
    assert cache.cost("shapes-resnet", "cpu", "rise", (("masks", 1000),))[1] == pytest.approx(before / 4)
    assert cache.cost("shapes-resnet", "cpu", "gradcam", ())[1] == pytest.approx(2 / 100.0)  # per method
    cache.learn("shapes-resnet", "cpu", "gradcam", 0.02, 0.3)  # too short to tell: overheads
    assert cache.cost("shapes-resnet", "cpu", "gradcam", ())[1] == pytest.approx(2 / 100.0)
