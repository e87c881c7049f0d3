"""AppTest of the PMI & IG page and the class-vs-class page."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLER = "samplers/shapes/patchsampler"  # the committed PatchSampler for shapes, K = 8


def test_pmi_page_shows_both_maps_and_the_look_inside(at, pages):
    pages.open(at, "pages/pmi.py")
    pages.need(SAMPLER)
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value == "PMI & IG maps"
    charts = at.get("plotly_chart")
    assert len(charts) == 2
    assert len(at.get("image")) >= 1 + 6  # the patch outline and one in-fill row per sampler
    # another class from the top 5: no new run needed, still two maps
    picker = at.selectbox(key="pmi.class")  # options read "label (p%)"; values are class indices
    labels = json.loads((ROOT / "assets/classifiers/shapes-resnet.json").read_text())["labels"]
    second = labels.index(picker.options[1].rsplit(" (", 1)[0])
    picker.set_value(second).run()
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) == 2
    assert labels[second] in at.get("plotly_chart")[0].proto.spec  # the PMI map of the chosen class
    at.selectbox(key="pmi.sampler").set_value("constant").run()
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) == 2


def test_pmi_page_reports_a_missing_sampler_as_an_error(at, pages):
    pages.open(at, "pages/pmi.py")
    pages.need(SAMPLER)
    at.slider(key="pmi.K").set_value(5).run()
    assert not at.exception
    assert at.error and "fit --explainer patchsampler" in at.error[0].value


def test_class_vs_class_page_shows_two_maps_and_their_difference(at, pages):
    at.run()
    options = at.sidebar.selectbox(key="sample").options
    two = [k for k, name in enumerate(options) if " and " in name]  # a two-shape sample
    if two:
        at.sidebar.selectbox(key="sample").select_index(two[0]).run()
    at.switch_page("pages/class_vs_class.py").run()
    assert not at.exception
    pages.need(SAMPLER)
    assert not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) == 3
    a = at.selectbox(key="cvc.a")
    at.selectbox(key="cvc.b").set_value(a.value).run()
    assert not at.exception
    assert any("same class" in i.value for i in at.info)
