"""AppTest of the VarSal page: mean and std side by side, samples, the prior picture, the sliders."""
from __future__ import annotations

PAGE = "pages/varsal.py"


def _open(at, pages):
    pages.open(at, PAGE)
    pages.need("varsal")
    return at


def _charts(at) -> int:
    return len(at.get("plotly_chart"))


def test_varsal_page_amortised_maps_samples_and_prior(at, pages):
    _open(at, pages)
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value.startswith("VarSal")
    assert at.success and "Amortised" in at.success[0].value
    assert _charts(at) == 2 + 2 + 4 + 1  # mean, std, std beyond the mean and std vs mean, 4 samples, the prior
    assert any("The mean predicts" in c.value for c in at.caption)


def test_varsal_page_alpha_slider_switches_to_per_image_and_says_so(at, pages):
    _open(at, pages)
    at.slider(key="varsal.alpha").set_value(0.2).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.info and "Per-image" in at.info[0].value and "alpha" in at.info[0].value
    assert _charts(at) == 9


def test_varsal_page_baseline_choice_switches_to_per_image(at, pages):
    _open(at, pages)
    at.selectbox(key="varsal.baseline").set_value("blur").run()
    assert not at.exception and not at.error
    assert at.info and "baseline" in at.info[0].value
