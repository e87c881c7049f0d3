"""Colour conventions and overlays. The engine's maps stay raw; only this module scales them for display.

One convention per kind of map:
- ``signed`` (PMI, MIP-IN attribution): diverging, centred at zero (red supports, blue opposes);
- ``mask`` (DSSR+, distribution controller, VarSal mean): sequential on [0, 1];
- ``positive`` (IG, VarSal std, baselines' magnitudes): sequential from zero to the map's maximum.
"""
from __future__ import annotations

import numpy as np

COLORSCALES = {"signed": "RdBu_r", "mask": "Viridis", "positive": "Inferno"}
_MPL_CMAPS = {"signed": "RdBu_r", "mask": "viridis", "positive": "inferno"}


def value_range(arr: np.ndarray, kind: str) -> tuple[float, float]:
    """The colour range for a map of this kind (symmetric about zero for signed maps)."""
    a = np.asarray(arr, dtype=np.float64)
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return (0.0, 1.0)
    if kind == "signed":
        m = float(np.abs(finite).max()) or 1e-12
        return (-m, m)
    if kind == "mask":
        lo, hi = float(finite.min()), float(finite.max())
        return (min(0.0, lo), max(1.0, hi))
    hi = float(finite.max())
    return (min(0.0, float(finite.min())), hi if hi > 0 else 1e-12)


def colorize(arr: np.ndarray, kind: str) -> np.ndarray:
    """Map -> RGB uint8 (H, W, 3) with the kind's colour map and range."""
    from matplotlib import colormaps

    lo, hi = value_range(arr, kind)
    t = np.clip((np.asarray(arr, dtype=np.float64) - lo) / (hi - lo), 0, 1)
    rgba = colormaps[_MPL_CMAPS.get(kind, "viridis")](np.nan_to_num(t))
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def overlay(image: np.ndarray, arr: np.ndarray, kind: str, alpha: float = 0.6) -> np.ndarray:
    """Blend the colourised map over an RGB uint8 image of the same size."""
    img = np.asarray(image, dtype=np.float64)
    col = colorize(arr, kind).astype(np.float64)
    return (alpha * col + (1 - alpha) * img).round().clip(0, 255).astype(np.uint8)


def grid_png(image: np.ndarray, panels: list[tuple[str, np.ndarray, str, str]], columns: int = 4, dpi: int = 110) -> bytes:
    """A PNG of maps over ``image``: ``panels`` are (title, map, kind, unit); each with its colour bar."""
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    n = max(1, len(panels))
    cols = min(columns, n)
    rows = -(-n // cols)
    fig = Figure(figsize=(3.2 * cols, 3.0 * rows), dpi=dpi)
    for k, (title, arr, kind, unit) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, k + 1)
        lo, hi = value_range(arr, kind)
        ax.imshow(image)
        im = ax.imshow(arr, cmap=colormaps[_MPL_CMAPS.get(kind, "viridis")], vmin=lo, vmax=hi, alpha=0.65)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        cb.set_label(unit, fontsize=8)
        cb.ax.tick_params(labelsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
