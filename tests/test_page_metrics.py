"""AppTest of the Faithfulness page: curves and metrics for the chosen maps, the box note for an
upload, a small dataset evaluation with its summary, the sanity check plot. Fast methods only."""
from __future__ import annotations

import io

PAGE = "pages/metrics.py"


def _open(at, pages, methods=("gradcam", "saliency")):
    pages.open(at, PAGE)
    pages.need()
    at.multiselect(key="metrics.methods").set_value(list(methods)).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def _table_columns(at, k=0):
    return list(at.dataframe[k].value.columns)


def test_curves_and_metrics_on_a_sample(at, pages):
    _open(at, pages)
    assert at.title[0].value.startswith("Faithfulness")
    assert len(at.get("plotly_chart")) == 1  # the curves (dataset and sanity wait for their buttons)
    cols = _table_columns(at)
    for c in ("map", "deletion AUC ↓", "insertion AUC ↑", "M_F % ↑", "pointing game", "M_I % ↑", "box accuracy ↑"):
        assert c in cols, cols
    df = at.dataframe[0].value
    assert list(df["map"]) == ["gradcam", "saliency"]
    assert df["deletion AUC ↓"].between(0, 1).all() and set(df["pointing game"]) <= {"hit", "miss"}
    assert not any("need the object's box" in i.value for i in at.info)


def test_an_image_without_a_box_says_the_box_metrics_need_one(at, pages, monkeypatch):
    # an upload has no box; region_for (tested below) returns None for it, as here
    from ui import page

    monkeypatch.setattr(page, "region_for", lambda png, clf: None)
    _open(at, pages, ("gradcam",))
    assert any("need the object's box" in i.value for i in at.info)
    cols = _table_columns(at)
    assert "pointing game" not in cols and "deletion AUC ↓" in cols


def test_region_for_finds_a_samples_mask_and_not_an_uploads(pages):
    import dataclasses

    from explainers import load_classifier
    from explainers.data import get_sample
    from ui import page

    pages.need()
    clf = load_classifier("shapes-resnet", device="cpu")
    s = get_sample("shapes/test/0")
    png, other = io.BytesIO(), io.BytesIO()
    s.image.save(png, format="PNG")
    s.image.rotate(90).save(other, format="PNG")
    mask = page.region_for(png.getvalue(), clf)
    assert mask is not None and mask.shape == (64, 64) and (mask == s.mask).all()
    assert page.region_for(other.getvalue(), clf) is None
    small = dataclasses.replace(clf, input_size=(32, 32))  # the mask follows the image's resize
    assert page.region_for(png.getvalue(), small).shape == (32, 32)


def test_dataset_section_runs_and_shows_means(at, pages):
    _open(at, pages, ("gradcam",))
    at.selectbox(key="metrics.ds.method").set_value("gradcam")
    at.slider(key="metrics.ds.limit").set_value(3)
    at.multiselect(key="metrics.ds.metrics").set_value(["pointing", "deletion"]).run()
    assert any("starts only on a click" in c.value for c in at.caption)  # with its estimate
    at.button(key="work.start.metrics.dataset").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    summary = at.dataframe[1].value
    assert list(summary["metric"]) == ["pointing", "deletion"] and list(summary["n"]) == [3, 3]
    assert len(at.get("plotly_chart")) == 2


def test_sanity_section_plots_the_cascade(at, pages):
    _open(at, pages, ("gradcam",))
    at.selectbox(key="metrics.sanity.method").set_value("gradcam").run()
    at.button(key="work.start.metrics.sanity").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) == 2
    labels = [m.label for m in at.metric]
    assert "Spearman, all layers random" in labels and "Reference: same network, made the same way" in labels
    v = float(at.metric[0].value)
    assert -1 <= v <= 1
    ref = at.metric[labels.index("Reference: same network, made the same way")]
    assert float(ref.value) > 0.99 and "deterministic" in ref.proto.help  # Grad-CAM has no seed: the same map again
    assert any("reference: the same run again" in c.value for c in at.caption)


def test_sanity_section_says_how_amortised_maps_are_made(at, pages):
    """VarSal and the controller offer a refit or a per-image run on both networks; the page says that an
    amortised map depends on the classifier only through its fit (no click: the runs take minutes)."""
    _open(at, pages, ("gradcam",))
    assert any("only through its fit" in c.value and "never calls the classifier" in c.value for c in at.caption)
    assert not [r for r in at.radio if r.key == "metrics.sanity.how"]
    at.selectbox(key="metrics.sanity.method").set_value("varsal").run()
    assert not at.exception, at.exception
    how = at.radio(key="metrics.sanity.how")
    assert how.value == "refit" and list(how.options) == ["refit its fitted part on each network (short fit)",
                                                          "per-image optimisation on each network"]
    assert any("starts only on a click" in c.value for c in at.caption)
