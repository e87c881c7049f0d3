"""Similarity of two maps: Spearman rank correlation, SSIM and the l2 distance."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ExplainerError


def _scale01(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo)


def similarity(a: Any, b: Any, absolute: bool = False) -> dict[str, float]:
    """Spearman rank correlation and SSIM of two maps (H, W), plus their l2 distance.

    SSIM is computed on the maps each scaled to [0, 1] (``data_range=1``; only the comparison
    scales, the maps stay raw). ``absolute`` compares |a| and |b| (Adebayo et al. report both).
    Spearman is NaN when a map is constant."""
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ExplainerError(f"similarity needs two maps of one shape (H, W), got {a.shape} and {b.shape}")
    if absolute:
        a, b = np.abs(a), np.abs(b)
    if a.std() == 0 or b.std() == 0:
        rho = float("nan")
    else:
        rho = float(spearmanr(a.ravel(), b.ravel()).statistic)
    win = min(7, *a.shape)
    win -= (win + 1) % 2  # odd
    ssim = float(structural_similarity(_scale01(a), _scale01(b), data_range=1.0, win_size=max(win, 3))) if min(a.shape) >= 3 else float("nan")
    return {"spearman": rho, "ssim": ssim, "l2": float(np.linalg.norm(a - b))}
