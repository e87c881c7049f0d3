"""Helpers for the PMI / IG pages: the shared controls, the cached run with its progress bar,
the patch outline and the in-fill mosaics."""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import streamlit as st

from explainers.core import Explanation
from explainers.diskcache import cached_explain
from explainers.methods.samplers import DEFAULT_K, SAMPLERS, patch_boxes

from . import cache

SAMPLER_HELP = (
    "patchsampler: the paper's PatchSampler (fitted for K = 8); gaussian: PDA's conditional Gaussian; "
    "blur / mean: in-fills from the surrounding ring; noise: uniform; constant: a grey level"
)
LARGE_RUN = 6000  # forwards above which the page asks before running


def pmi_controls(input_size: tuple[int, int], key: str = "pmi") -> dict[str, Any]:
    """Sliders for K, N, stride, the sampler (and its grey level, seed); returns changed params."""
    side = min(input_size)
    c1, c2, c3, c4 = st.columns(4)
    K = c1.slider("K (patch side)", 2, min(32, side), min(DEFAULT_K, side), key=f"{key}.K",
                  help="patches are K×K pixels; each is in-filled given its 3K×3K neighbourhood")
    N = c2.slider("N (in-fills per patch)", 1, 64, 8, key=f"{key}.N", help="Monte-Carlo samples of Eq. 3")
    stride = c3.slider("stride S", 1, K, min(4, K), key=f"{key}.stride", help="smaller = finer and slower")
    sampler = c4.selectbox("sampler", SAMPLERS, key=f"{key}.sampler", help=SAMPLER_HELP)
    params: dict[str, Any] = {"K": K, "N": N, "stride": stride, "sampler": sampler}
    if sampler == "constant":
        params["value"] = st.slider("grey level", 0.0, 1.0, 0.5, 0.05, key=f"{key}.value")
    h, w = input_size
    forwards = len(patch_boxes(h, w, K, stride)) * (N if sampler in ("patchsampler", "gaussian", "noise") else 1)
    st.caption(f"{forwards:,} classifier forwards")
    if forwards > LARGE_RUN and not st.toggle(f"run anyway ({forwards:,} forwards may take minutes)", key=f"{key}.go"):
        st.info("Raise the stride or lower N for a quick look, or switch the toggle on.")
        st.stop()
    return params


def pmi_result(ctx, params: dict[str, Any], label: str = "PMI & IG") -> Explanation:
    """The ``pmi-ig`` result for the sidebar's model and image, with a live progress bar.

    Looked up in this session's memo, then in the shared disk cache, else computed. (Not through
    ``ui.cache.explanation``: a progress bar updated inside an ``st.cache_data`` function is
    recorded and cannot be replayed on the next hit — Streamlit raises CacheReplayClosureError.)
    """
    memo: dict = st.session_state.setdefault("pmi.results", {})
    key = (ctx.model_id, ctx.device, hashlib.sha256(ctx.png).hexdigest(), cache.frozen(params))
    if key not in memo:
        clf = cache.classifier(ctx.model_id, ctx.device)
        bar, clear = cache.st_progress(label)
        try:
            memo[key] = cached_explain(clf, cache.decode_image(ctx.png), "pmi-ig", progress=bar, **params)
        finally:
            clear()
        while len(memo) > 8:  # keep the session's memo small
            memo.pop(next(iter(memo)))
    return memo[key]


def to_uint8(chw: np.ndarray) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8."""
    return (np.clip(np.asarray(chw).transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)


def with_box(image: np.ndarray, box: tuple[int, int, int, int], colour=(255, 210, 0)) -> np.ndarray:
    """A copy of an (H, W, 3) uint8 image with a 1-pixel outline just outside ``box`` (x0, y0, x1, y1)."""
    out = image.copy()
    h, w = out.shape[:2]
    x0, y0, x1, y1 = box
    xa, xb, ya, yb = max(x0 - 1, 0), min(x1, w - 1), max(y0 - 1, 0), min(y1, h - 1)
    out[ya, xa : xb + 1] = colour
    out[yb, xa : xb + 1] = colour
    out[ya : yb + 1, xa] = colour
    out[ya : yb + 1, xb] = colour
    return out


def infill_mosaic(result: dict[str, np.ndarray], scale: int = 4, gap: int = 3) -> np.ndarray:
    """One row: the neighbourhood with its hole greyed out, then every in-filled neighbourhood.

    ``result`` is what ``explainers.methods.samplers.infills`` returns. Tiles are enlarged
    ``scale`` times (nearest) and separated by white gaps; returns (H, W, 3) uint8.
    """
    nb = result["neighbourhood"].copy()
    nb[:, result["hole"]] = 0.5
    tiles = [nb, *result["filled"]]
    tiles = [np.kron(to_uint8(t), np.ones((scale, scale, 1), np.uint8)) for t in tiles]
    h, w = tiles[0].shape[:2]
    row = np.full((h, len(tiles) * (w + gap) - gap, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        row[:, i * (w + gap) : i * (w + gap) + w] = t
    return row
