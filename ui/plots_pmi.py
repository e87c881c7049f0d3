"""Figures for the PMI / IG pages: the patch outline and the in-fill mosaics (plain NumPy)."""
from __future__ import annotations

import numpy as np

from .plots import to_uint8


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
