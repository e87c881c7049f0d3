"""AppTest of the comparison page: the grid, per-cell failures, recomputing only what a slider
affects, the exports, and two sessions side by side."""
from __future__ import annotations

import dataclasses
import io
import json
import numpy as np
import pytest

import ui.cache
from explainers.core import METHODS, get_method

PAGE = "pages/compare.py"
FAST = ["varsal", "dcontrol", "mipin", "gradcam"]  # amortised or one-pass: seconds, not minutes


@pytest.fixture
def calls(monkeypatch):
    """Every engine computation the pages cause, as (method, params): memory and disk cache hits
    never get here."""
    import explainers.diskcache

    seen: list[tuple[str, dict]] = []
    real = explainers.diskcache.explain

    def counting(clf, image, method, target=None, progress=None, **params):
        seen.append((method, params))
        return real(clf, image, method, target=target, progress=progress, **params)

    monkeypatch.setattr(explainers.diskcache, "explain", counting)
    return seen


@pytest.fixture
def at(app):
    return app(**{"compare.methods": FAST})


def _maps(methods) -> int:
    get_method("gradcam")
    return sum(len(METHODS[m].maps) for m in methods)


def _captions(a) -> list[str]:
    return [c.value for c in a.caption]


def _units(a) -> dict[str, dict[str, str]]:
    """Each FAST method's map units as its result states them (MIP-IN's depends on the network)."""
    import ui.grid

    ctx = a.session_state["ctx"]
    top = ui.cache.predict(ctx.model_id, "cpu", ctx.png, 1)[0][0]
    out = {}
    for m in FAST:
        r = ui.cache.lookup(ctx.model_id, "cpu", ctx.png, m, (), ui.grid.run_key_target(m, top, top))
        out[m] = ui.grid.units_of(r)
    return out


def test_grid_shows_every_map_with_units_and_exports(at, pages):
    a = pages.open(at, PAGE)
    assert not a.error and not a.warning, [e.value for e in [*a.error, *a.warning]]
    assert len(a.get("plotly_chart")) == _maps(FAST)
    caps = [c for c in _captions(a) if " · range " in c]
    assert len(caps) == _maps(FAST)
    for m, units in _units(a).items():  # every map says its unit, as its method's page names it
        for unit in units.values():
            assert any(c.startswith(unit) for c in caps), (m, unit)
    downloads = a.get("download_button")
    assert len(downloads) == 2


def test_maps_in_one_unit_share_a_symmetric_scale(at, pages):
    """VarSal's mean (signed) and std (positive) are both in prior s.d.: one scale, ±peak and 0…peak."""
    a = pages.open(at, PAGE)
    specs = [json.loads(c.proto.spec) for c in a.get("plotly_chart")]
    heat = [t for s in specs for t in s["data"] if t["type"] == "heatmap" and t["colorbar"]["title"]["text"] == "prior s.d."]
    assert len(heat) == 2
    signed = next(t for t in heat if t.get("zmid") == 0)
    positive = next(t for t in heat if t is not signed)
    assert signed["zmax"] == -signed["zmin"] == positive["zmax"] and positive["zmin"] <= 0
    assert sum("scale shared" in c for c in _captions(a)) == 2


def test_a_nearly_zero_map_is_muted_with_a_note(at, pages, monkeypatch):
    import torch

    from explainers.core import MethodOutput

    spec = METHODS["gradcam"]
    monkeypatch.setitem(METHODS, "gradcam", dataclasses.replace(
        spec, run=lambda clf, x, t, cfg, progress=None: MethodOutput({"gradcam": torch.full(clf.input_size, 1e-12)})))
    a = pages.open(at, PAGE)
    note = [c for c in _captions(a) if "nearly zero" in c]
    assert len(note) == 1 and "activation × gradient" in note[0]
    specs = [json.loads(c.proto.spec) for c in a.get("plotly_chart")]
    muted = [s for s in specs if "nearly zero" in str(s["layout"].get("title", {}).get("text", ""))]
    assert len(muted) == 1 and muted[0]["data"][-1]["opacity"] < 0.5


def test_each_cell_shows_its_estimate_and_long_work_waits_for_a_click(app, pages, calls, monkeypatch):
    """With a classifier measured as very slow, every method is 'long': the cells show their
    estimate and a Run button, nothing runs until one is clicked, and only that one runs."""
    import explainers.cost

    monkeypatch.setattr(ui.cache, "rates", lambda model_id, device: explainers.cost.Rates(forward=0.01, backward=0.01))
    a = pages.open(app(**{"compare.methods": ["gradcam", "saliency"]}), PAGE)
    assert calls == [] and len(a.get("plotly_chart")) == 0
    assert sum("starts only on a click" in c for c in _captions(a)) == 2
    run = a.button(key="work.start.grid.gradcam")
    assert run.label.startswith("Run (about ")
    a.button(key="work.start.grid.gradcam").click().run()
    assert [m for m, _ in calls] == ["gradcam"] and len(a.get("plotly_chart")) == 1
    a.selectbox(key="target").set_value(a.selectbox(key="target").options and a.selectbox(key="target").value).run()
    assert [m for m, _ in calls] == ["gradcam"]  # a rerun starts nothing and recomputes nothing


def test_a_running_cell_draws_the_partial_maps_its_method_publishes(app, pages, monkeypatch):
    """While a method runs, its grid cell draws the latest partial map it published (its first map,
    labelled "partial (so far)"), then the final map replaces it."""
    import time

    import explainers.diskcache
    import ui.grid
    import ui.page

    real, drawn = explainers.diskcache.explain, []

    def slow(clf, image, method, target=None, progress=None, **params):
        part = np.full((64, 64), np.nan, dtype=np.float32)
        part[:8, :8] = 1.0
        progress(1, 2, "half", partial={method: part})
        time.sleep(1.0)  # the waiting script polls every 0.25 s
        return real(clf, image, method, target=target, progress=progress, **params)

    def partial_image(method, partial):
        drawn.append((method, float(np.nansum(ui.page.partial_maps(partial)[method]))))

    monkeypatch.setattr(explainers.diskcache, "explain", slow)
    monkeypatch.setattr(ui.grid, "partial_image", partial_image)
    a = pages.open(app(**{"compare.methods": ["gradcam"]}), PAGE)
    assert not a.exception
    assert drawn == [("gradcam", 64.0)]
    assert len(a.get("plotly_chart")) == 1  # the final map


def test_a_method_that_cannot_run_says_why_without_running(at, pages, calls, monkeypatch):
    import explainers.cost

    blocked = explainers.cost.Cost(blocked="gradcam: no layer to read; fit one with `python -m explainers fit ...`")
    monkeypatch.setitem(explainers.cost._ESTIMATES, "gradcam", lambda clf, cfg: blocked)
    a = pages.open(at, PAGE)
    assert "gradcam" not in [m for m, _ in calls]
    assert any("no layer to read" in w.value for w in a.warning)
    assert len(a.get("plotly_chart")) == _maps(FAST) - 1


def test_a_failing_method_shows_a_message_in_its_cell_and_the_rest_render(at, pages, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("deliberate failure\nsecond line that must not show")

    monkeypatch.setitem(METHODS, "gradcam", dataclasses.replace(METHODS["gradcam"], run=boom))
    a = pages.open(at, PAGE)
    assert len(a.error) == 1
    msg = a.error[0].value
    assert msg.startswith("Grad-CAM (Captum) failed: RuntimeError: deliberate failure") and "\n" not in msg and "Traceback" not in msg
    assert len(a.get("plotly_chart")) == _maps(FAST) - _maps(["gradcam"])


def test_slider_change_recomputes_only_the_method_it_belongs_to(at, pages, calls):
    a = pages.open(at, PAGE)
    assert sorted(m for m, _ in calls) == sorted(FAST)  # cold: each method once
    calls.clear()
    a.slider(key="knob.dcontrol.eta").set_value(2.0).run()
    assert not a.exception
    assert [m for m, _ in calls] == ["dcontrol"] and calls[0][1]["eta"] == 2.0
    calls.clear()
    a.slider(key="knob.dcontrol.eta").set_value(1.5).run()  # back to a value seen before: all cached
    assert calls == []
    assert len(a.get("plotly_chart")) == _maps(FAST)


def test_exports_reproduce_the_maps_and_say_what_made_them(at, pages):
    """The page hands the download buttons ``ui.grid.export_npz`` / ``export_png`` (made on click);
    AppTest gives no download bytes, so call them on the same results and check what they hold:
    the maps, and the model, class, methods, settings and the commands that reproduce them (the
    PNG in its text chunks, the .npz in its meta)."""
    from PIL import Image

    import ui.grid

    a = pages.open(at, PAGE)
    labels = [d.proto.label for d in a.get("download_button")]
    assert any("npz" in x for x in labels) and any("PNG" in x for x in labels)
    ctx = a.session_state["ctx"]
    top = ui.cache.predict(ctx.model_id, "cpu", ctx.png, 1)[0][0]
    results = [ui.cache.lookup(ctx.model_id, "cpu", ctx.png, m, (), ui.grid.run_key_target(m, top, top)) for m in FAST]
    context = {"model": ctx.model_id, "device": "cpu", "image": "circle.png", "target": top, "class": "circle"}
    with np.load(io.BytesIO(ui.grid.export_npz(results, context)), allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        for r in results:
            for k, v in r.maps.items():
                np.testing.assert_array_equal(z[f"{r.meta['method']}.{k}"], v)
    assert meta["model"] == ctx.model_id and meta["class"] == "circle" and meta["methods"] == FAST
    assert len(meta["commands"]) == len(FAST) and all(c.startswith("python -m explainers explain") for c in meta["commands"])
    assert all(f"--model {ctx.model_id}" in c and "--image circle.png" in c for c in meta["commands"])
    image = np.zeros((64, 64, 3), np.uint8)
    png = Image.open(io.BytesIO(ui.grid.export_png(image, results, context)))
    assert png.format == "PNG" and png.width > 4 * 200  # four panels a row
    text = png.text
    assert text["model"] == ctx.model_id and text["class"] == "circle" and text["methods"] == ", ".join(FAST)
    settings = json.loads(text["settings"])
    assert set(settings) == set(FAST) and settings["dcontrol"]["eta"] == 1.5
    assert text["command"].splitlines() == meta["commands"]


def test_two_sessions_keep_their_own_image_and_maps(at, pages, app):
    """Two sessions of one server: changing the image in one leaves the other's page as it was
    (the model is shared through st.cache_resource; the results are per image)."""
    a = pages.open(at, PAGE)
    png_a = a.session_state["ctx"].png
    charts_a = [c.proto.spec for c in a.get("plotly_chart")]
    # AppTest loses sidebar widgets on reruns under st.navigation: set the second session's image
    # before its first run
    b = pages.open(app(**{"compare.methods": FAST, "sample": 5}), PAGE)
    assert b.session_state["ctx"].png != png_a
    a.run()
    assert a.session_state["ctx"].png == png_a
    assert [c.proto.spec for c in a.get("plotly_chart")] == charts_a
    assert [c.proto.spec for c in b.get("plotly_chart")] != charts_a
