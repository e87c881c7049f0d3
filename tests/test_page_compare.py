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


def test_grid_shows_every_map_with_units_and_exports(at, pages):
    a = pages.open(at, PAGE)
    assert not a.error and not a.warning, [e.value for e in [*a.error, *a.warning]]
    assert len(a.get("plotly_chart")) == _maps(FAST)
    caps = [c for c in _captions(a) if " · range " in c]
    assert len(caps) == _maps(FAST)
    for m in FAST:  # every map says its unit
        for unit in METHODS[m].units.values():
            assert any(c.startswith(unit) for c in caps), (m, unit)
    downloads = a.get("download_button")
    assert len(downloads) == 2


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


def test_exports_reproduce_the_maps(at, pages):
    """The page hands the download buttons ``ui.grid.export_npz`` / ``export_png`` (made on click);
    AppTest gives no download bytes, so call them on the same results and check what they hold."""
    from PIL import Image

    import ui.grid

    a = pages.open(at, PAGE)
    labels = [d.proto.label for d in a.get("download_button")]
    assert any("npz" in x for x in labels) and any("PNG" in x for x in labels)
    ctx = a.session_state["ctx"]
    results = [ui.cache.explanation(ctx.model_id, "cpu", ctx.png, m, (), None) for m in FAST]
    with np.load(io.BytesIO(ui.grid.export_npz(results)), allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        for r in results:
            for k, v in r.maps.items():
                np.testing.assert_array_equal(z[f"{r.meta['method']}.{k}"], v)
    assert len(meta["commands"]) == len(FAST) and all("python -m explainers explain" in c for c in meta["commands"])
    image = np.zeros((64, 64, 3), np.uint8)
    png = Image.open(io.BytesIO(ui.grid.export_png(image, results)))
    assert png.format == "PNG" and png.width > 4 * 200  # four panels a row


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
