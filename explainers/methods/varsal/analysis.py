"""What VarSal's standard deviation says beyond its mean (used by the page and
``scripts/varsal_uncertainty.py``).

A factorised posterior keeps ν near the prior's wherever the likelihood does not care about a
pixel and shrinks it where it does; the pixels the likelihood cares about are the ones the mean
ranks high. So √ν is largely a decreasing function of μ (Spearman ρ ≈ −0.85 on the shapes
models), and a std map read on its own mostly repeats the mean. :func:`std_beyond_mean` removes
that part: it fits √ν ≈ a + b·μ + c·μ² over the image by least squares and returns the residual,
the std a pixel has *beyond* what its mean predicts, and the share of the std's variance the mean
explains (R²).
"""
from __future__ import annotations

import numpy as np


def std_beyond_mean(mean, std, degree: int = 2) -> tuple[np.ndarray, float]:
    """(residual map, R²): ``std`` minus its least-squares polynomial fit (``degree``) on ``mean``,
    pixel by pixel over the image, and the share of the std's variance that fit explains.
    A constant std gives a zero residual and R² = 1 (nothing is left to explain)."""
    m = np.asarray(mean, dtype=np.float64)
    s = np.asarray(std, dtype=np.float64)
    if m.shape != s.shape:
        raise ValueError(f"mean and std must have the same shape, got {m.shape} and {s.shape}")
    x, y = m.ravel(), s.ravel()
    scale = x.std() or 1.0  # a centred, scaled μ keeps the normal equations well conditioned
    design = np.vander((x - x.mean()) / scale, int(degree) + 1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    var = float(y.var())
    r2 = 1.0 if var <= 1e-20 else max(0.0, 1.0 - float(resid.var()) / var)
    return resid.reshape(s.shape).astype(np.float32), r2
