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


def test_pmi_page_offers_only_the_fitted_K_and_says_how_to_fit_another(at, pages):
    from ui.widgets import fitted_K

    pages.open(at, "pages/pmi.py")
    pages.need(SAMPLER)
    k = at.selectbox(key="pmi.K")
    assert k.options == [f"{v} px" for v in fitted_K("patchsampler", "shapes")] and k.value == 8
    assert "fit --explainer patchsampler --data shapes" in k.proto.help
    assert any("fit --explainer patchsampler --data shapes --set K=" in c.value for c in at.caption)
    at.selectbox(key="pmi.sampler").set_value("blur").run()  # a sampler that needs no fit: any K
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "16 px" in at.selectbox(key="pmi.K").options
    at.selectbox(key="pmi.K").set_value(16).run()
    at.selectbox(key="pmi.sampler").set_value("patchsampler").run()  # back: K returns to a fitted value
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="pmi.K").value in fitted_K("patchsampler", "shapes")


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
    assert len(at.get("plotly_chart")) == 6  # PMI A, B, A − B; controller A, B, A − B
    assert any("Spearman ρ between the two masks" in c.value for c in at.caption)
    a = at.selectbox(key="cvc.a")
    at.selectbox(key="cvc.b").set_value(a.value).run()
    assert not at.exception
    assert any("same class" in i.value for i in at.info)


def test_class_vs_class_maps_and_difference_share_one_symmetric_scale(app, pages):
    """The two PMI maps and their difference on one colour scale, symmetric about zero."""
    at = app()
    at.run()
    two = [k for k, name in enumerate(at.sidebar.selectbox(key="sample").options) if " and " in name]
    a = pages.open(app(sample=two[0]) if two else at, "pages/class_vs_class.py")
    pages.need(SAMPLER)
    assert not a.error, [e.value for e in a.error]
    heat = [t for c in a.get("plotly_chart") for t in json.loads(c.proto.spec)["data"] if t["type"] == "heatmap"]
    assert len(heat) == 6
    pmi, dc = heat[:3], heat[3:]
    assert len({(t["zmin"], t["zmax"]) for t in pmi}) == 1 and pmi[0]["zmin"] == -pmi[0]["zmax"]
    assert dc[2]["zmin"] == -dc[2]["zmax"]  # the controller's difference: symmetric about zero
    assert dc[0]["z"] != dc[1]["z"], "the controller's masks for A and B are the same"
