"""AppTest of the distribution-controller page."""
from __future__ import annotations

PAGE = "pages/dcontrol.py"


def _slider(at, prefix):
    return next(s for s in at.slider if s.key.startswith(prefix))


def _open(at, pages):
    pages.open(at, PAGE)
    pages.need("dcontrol-customised")
    return at


def test_dcontrol_page_masks_sliders_and_density(at, pages):
    _open(at, pages)
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Distribution controller"
    assert len(at.get("plotly_chart")) == 4  # raw, fine-tuned, Eq. 7 vs histogram, fine-tuning curve
    assert any("fitted generator" in c.value and "η = 1.5" in c.value for c in at.caption)
    # η and h re-applied live to the stored z
    _slider(at, "dc.eta").set_value(3.0).run()
    _slider(at, "dc.h").set_value(1.0).run()
    assert not at.exception and not at.error
    assert any("re-applied to the stored z" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 4
    # the basic transformer's fit
    at.radio(key="dc.transformer").set_value("basic").run()
    assert not at.exception and not at.error
    assert _slider(at, "dc.eta").disabled
    assert len(at.get("plotly_chart")) == 4


def test_dcontrol_page_per_image_optimisation(at, pages):
    _open(at, pages)
    at.selectbox(key="dc.generator").set_value("optimise").run()
    assert not at.exception and not at.error
    assert any("per-image optimisation" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 4
