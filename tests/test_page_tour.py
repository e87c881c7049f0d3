"""AppTest of the teaching tour: every step (and every knob of the knobs step) runs in the real
engine, shows its figures and no exception or error; the step selector and Previous/Next agree."""
from __future__ import annotations

# plotly charts each step draws (the knobs step: its first knob, K)
CHARTS = {"evidence": 2, "shortcut": 6, "two": 7, "unsure": 4, "samplers": 6, "knobs": 3, "uncertainty": 4}
KNOB_CHARTS = {"K (PMI)": 3, "N (PMI)": 3, "λ (DSSR+)": 2, "α (VarSal)": 3, "η and h (controller)": 2}
FITS = ("varsal", "mipin", "dcontrol-customised")
MODELS = ("shapes-resnet", "shapes-biased-resnet")


def _charts(at) -> int:
    return len(at.get("plotly_chart"))


def _clean(at, what: str) -> None:
    assert not at.exception, (what, [e.value for e in at.exception])
    assert not at.error, (what, [e.value for e in at.error])


def _open(at, pages):
    pages.open(at, "pages/tour.py")
    _clean(at, "first run")
    pages.need(*FITS, models=MODELS)
    return at


def test_tour_lists_its_steps_and_each_says_which_figures_it_mirrors():
    from ui import tour

    assert [s.key for s in tour.STEPS] == list(CHARTS)
    for s in tour.STEPS:
        assert "Fig." in s.figures and s.text.count(". ") >= 1
        assert s.model in ("shapes-resnet", "shapes-biased-resnet") and "/test/" in s.sample


def test_tour_walks_every_step_with_its_figures(at, pages):
    from ui import tour

    _open(at, pages)
    assert at.title[0].value == "Teaching tour"
    titles = at.selectbox(key="tour.step").options
    assert len(titles) == len(tour.STEPS)
    for title, step in zip(titles, tour.STEPS):
        at.selectbox(key="tour.step").set_value(title).run()
        _clean(at, title)
        assert at.subheader[0].value == step.title
        assert _charts(at) == CHARTS[step.key], (title, _charts(at))
        assert any(step.figures in c.value for c in at.caption)
    # the evidence step: its images, the prediction gets more confident when opposing evidence goes
    at.selectbox(key="tour.step").set_value(titles[0]).run()
    assert len(at.get("image")) >= 1
    at.select_slider(key="tour.ev.fraction").set_value(1.0).run()
    _clean(at, "evidence slider")
    assert _charts(at) == CHARTS["evidence"]


def test_tour_next_and_previous_buttons_move_one_step(at, pages):
    _open(at, pages)
    titles = at.selectbox(key="tour.step").options
    assert at.selectbox(key="tour.step").value == titles[0]
    assert at.button(key="tour.prev").disabled
    at.button(key="tour.next").click().run()
    _clean(at, "next")
    assert at.selectbox(key="tour.step").value == titles[1]
    assert at.subheader[0].value.startswith("A shortcut")
    at.switch_page("pages/home.py").run()  # away and back: the tour remembers its step
    at.switch_page("pages/tour.py").run()
    _clean(at, "back to the tour")
    assert at.selectbox(key="tour.step").value == titles[1]
    at.button(key="tour.prev").click().run()
    assert at.selectbox(key="tour.step").value == titles[0]
    at.selectbox(key="tour.step").set_value(titles[-1]).run()
    assert at.button(key="tour.next").disabled


def test_tour_knobs_and_corruptions(at, pages):
    _open(at, pages)
    titles = at.selectbox(key="tour.step").options
    at.selectbox(key="tour.step").set_value(titles[5]).run()
    for knob, n in KNOB_CHARTS.items():
        at.radio(key="tour.knob").set_value(knob).run()
        _clean(at, knob)
        assert _charts(at) == n, (knob, _charts(at))
    at.radio(key="tour.knob").set_value("η and h (controller)").run()
    at.slider(key="tour.dc.h").set_value(1.0).run()
    _clean(at, "h slider")
    assert "h = 1" in at.get("plotly_chart")[0].proto.spec  # the mask re-shaped with the new h
    at.selectbox(key="tour.step").set_value(titles[6]).run()
    for kind in ("brightness", "motion-blur", "noise"):
        at.radio(key="tour.unc.kind").set_value(kind).run()
        _clean(at, kind)
        assert _charts(at) == CHARTS["uncertainty"]
        assert any(c.value.startswith(f"{kind}: std") for c in at.caption)
