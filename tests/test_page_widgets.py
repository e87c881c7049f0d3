"""The page scaffold's parts on their own: widgets built from a config's metadata (``ui.widgets``),
the progress runner and the one-line messages (``ui.page``), the grid's method list."""
from __future__ import annotations

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
    assert a.selectbox(key="t.mode").value == "a" and a.selectbox(key="t.mode").proto.help == "which mode"
    eta = a.slider(key="t.eta")  # both ends given: a slider, labelled with the paper's symbol
    assert eta.value == 1.5 and (eta.min, eta.max) == (0.1, 5.0) and "η" in eta.label and "paper: 1.5" in eta.proto.help
    assert a.number_input(key="t.steps").value == 60  # one end only: a number input
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
