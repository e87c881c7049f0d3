"""AppTest of the DSSR+ page: mask, preserved and deleted image with their probabilities, the
optimisation history, the resolved settings; sliders re-run; engine errors are one line."""
from __future__ import annotations

PAGE = "pages/dssr.py"


def _open(at, pages):
    at.session_state["dssr.iterations"] = 20  # few iterations: the test is about the page, not the method
    pages.open(at, PAGE)
    pages.need()
    return at


def _captions(at) -> str:
    return "\n".join(c.value for c in at.caption)


def test_dssr_page_shows_mask_both_images_probabilities_and_history(at, pages):
    _open(at, pages)
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value.startswith("DSSR+")
    assert len(at.get("plotly_chart")) == 4  # mask, preserved, deleted, optimisation history
    labels = [m.label for m in at.metric]
    assert len(labels) == 3 and "on the image" in labels[0] and "preserved" in labels[1] and "deleted" in labels[2]
    for m in at.metric:
        v = float(m.value.rstrip("%"))
        assert 0.0 <= v <= 100.0
    text = _captions(at)
    assert "Resolved for 64×64" in text and "k₁ = 3" in text and "k₂ = 5" in text and "m is 68×68" in text
    assert "λ = 10/(H·W)" in text
    assert "20 iterations" in text
    # the automatic reference says what it chose and why (each candidate's class evidence)
    assert "reference **auto → " in text and "class evidence" in text and "noise" in text
    assert "f(preserved) ≤ θ·f(x)" in text


def test_dssr_page_iterations_slider_reruns(at, pages):
    _open(at, pages)
    before = [m.value for m in at.metric]
    at.slider(key="dssr.iterations").set_value(40).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "40 iterations" in _captions(at)
    assert len(at.get("plotly_chart")) == 4
    assert [m.value for m in at.metric][0] == before[0]  # the original image's probability is unchanged


def test_dssr_page_ablation_and_reference(at, pages):
    _open(at, pages)
    at.selectbox(key="dssr.variant").set_value("ssr").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    text = _captions(at)
    assert "regulariser ‖m‖₁" in text and "λ = 1/(H·W)" in text and "m starts at 0" in text
    assert at.slider(key="dssr.theta").disabled  # SSR has one λ
    at.radio(key="dssr.reference").set_value("constant").run()
    assert not at.exception and not at.error
    assert "reference **constant**" in _captions(at)
    assert len(at.get("plotly_chart")) == 4


def test_engine_errors_are_one_line_not_a_traceback(at, pages, monkeypatch):
    from explainers.errors import ExplainerError
    from explainers.methods import dssr

    def boom(self, h, w):
        raise ExplainerError("dssr: k1=99 is larger than the mask 68x68")

    monkeypatch.setattr(dssr.DSSRConfig, "resolve", boom)
    _open(at, pages)
    assert not at.exception
    assert at.error and "k1=99 is larger" in at.error[0].value
    assert len(at.get("plotly_chart")) == 0
