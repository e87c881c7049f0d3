"""The distribution controller ``C`` (Section 3.2.2, Eq. 5–7): instance normalisation, the basic
and customised transformers, the closed-form density of Eq. 7, and re-applying the controller to a
stored coarse ``z`` (:func:`masks_from_z`). Plain tensors and arrays: no classifier, no generator.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import ExplainerError

TRANSFORMERS = ("customised", "basic")
IN_EPS = 1e-5  # instance normalisation's ε (as nn.InstanceNorm2d)

ArrayLike = Union[np.ndarray, torch.Tensor]


def _positive(name: str, v: Any, allow_zero: bool = False) -> None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    ok = ok and (float(v) >= 0 if allow_zero else float(v) > 0)
    if not ok:
        raise ExplainerError(f"dcontrol: {name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {v!r}")


def check_eta_h(eta: Any, h: Any) -> None:
    """η and h must be finite and positive (Eq. 6); raises ExplainerError otherwise."""
    _positive("eta", eta)
    _positive("h", h)
    if float(eta) > 100 or float(h) > 100:
        raise ExplainerError(f"dcontrol: eta and h must be at most 100, got eta={eta}, h={h}")


def check_transformer(transformer: Any) -> None:
    if transformer not in TRANSFORMERS:
        raise ExplainerError(f"dcontrol: transformer must be one of {', '.join(TRANSFORMERS)}, got {transformer!r}")


def instance_normalise(mg: torch.Tensor, eps: float = IN_EPS) -> torch.Tensor:
    """``z = (m − E[m]) / sqrt(Var[m] + ε)`` over the spatial positions of each map (B, 1, h, w)."""
    mean = mg.mean(dim=(-2, -1), keepdim=True)
    var = mg.var(dim=(-2, -1), keepdim=True, unbiased=False)
    return (mg - mean) / torch.sqrt(var + eps)


def apply_controller(z: ArrayLike, transformer: str = "customised", eta: float = 1.5, h: float = 2.5) -> ArrayLike:
    """The transformer on normalised scores ``z``: ``ReLU(z)`` (Eq. 5) or ``sigmoid(η z)^h`` (Eq. 6).

    Monotone in ``z`` (strictly for the customised one), so the ranking of the scores is kept.
    Accepts a tensor (differentiable) or a numpy array (returns the same type).
    """
    check_transformer(transformer)
    check_eta_h(eta, h)
    if isinstance(z, np.ndarray):
        t = torch.from_numpy(np.asarray(z, dtype=np.float64))
        return apply_controller(t, transformer, eta, h).numpy().astype(z.dtype if z.dtype.kind == "f" else np.float64)
    if transformer == "basic":
        return torch.relu(z)
    # sigmoid(ηz)^h = exp(h · logsigmoid(ηz)): no underflow to 0 before the power
    return torch.exp(float(h) * F.logsigmoid(float(eta) * z))


def controller_density(r: ArrayLike, eta: float = 1.5, h: float = 2.5, transformer: str = "customised") -> np.ndarray:
    """Density of the controller's output when ``z ~ N(0, 1)``.

    Customised (Eq. 7, proof in Appendix A.3), for ``m`` in (0, 1)::

        p(m) = 1 / (sqrt(2π) h η) · 1 / (m (1 − m^{1/h})) · exp(−(ln(m^{−1/h} − 1))² / (2 η²))

    and 0 outside. Basic: the half-normal part ``φ(m)`` for ``m > 0`` (plus a point mass of 1/2
    at 0, which a density cannot show).
    """
    m = np.asarray(r.detach().cpu().numpy() if isinstance(r, torch.Tensor) else r, dtype=np.float64)
    if transformer == "basic":
        return np.where(m > 0, np.exp(-0.5 * m**2) / math.sqrt(2 * math.pi), 0.0)
    check_transformer(transformer)
    check_eta_h(eta, h)
    eta, h = float(eta), float(h)
    inside = (m > 0) & (m < 1)
    mm = np.where(inside, m, 0.5)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        root = mm ** (1.0 / h)
        u = np.log(np.expm1(-np.log(mm) / h))  # ln(m^{-1/h} − 1), stable near m = 1
        p = np.exp(-(u**2) / (2 * eta**2)) / (math.sqrt(2 * math.pi) * h * eta * mm * (1 - root))
    return np.where(inside & np.isfinite(p), p, 0.0)


def controller_cdf(r: ArrayLike, eta: float = 1.5, h: float = 2.5) -> np.ndarray:
    """P(sigmoid(η z)^h <= m) for ``z ~ N(0, 1)``: ``Φ(−ln(m^{−1/h} − 1) / η)`` (from Eq. 12)."""
    from scipy.special import ndtr

    check_eta_h(eta, h)
    m = np.asarray(r, dtype=np.float64)
    inside = (m > 0) & (m < 1)
    mm = np.where(inside, m, 0.5)
    with np.errstate(over="ignore", divide="ignore"):
        z = -np.log(np.expm1(-np.log(mm) / float(h))) / float(eta)
    return np.where(m <= 0, 0.0, np.where(m >= 1, 1.0, ndtr(z)))


def upsample(md: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of the coarse map (B, 1, h, w) to ``size`` (Eq. 4)."""
    if tuple(md.shape[-2:]) == tuple(size):
        return md
    return F.interpolate(md, size=tuple(size), mode="bilinear", align_corners=False)


def masks_from_z(
    z: ArrayLike,
    size: tuple[int, int],
    transformer: str = "customised",
    eta: float = 1.5,
    h: float = 2.5,
    v: Optional[ArrayLike] = None,
) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Re-apply the controller to a stored coarse ``z`` (h, w): ``(mask, mask_finetuned)`` at ``size``.

    ``mask = upsample(C(z))``; with the per-pixel extra importance ``v`` of a run's fine-tuning,
    ``mask_finetuned = mask · v`` (the controller keeps the ranking, so ``v`` — a function of the
    ranking only — holds for any η, h). No generator or classifier forward.
    """
    zt = torch.as_tensor(np.asarray(z, dtype=np.float32))
    zt = zt.reshape(1, 1, *zt.shape[-2:])
    with torch.no_grad():
        mask = upsample(apply_controller(zt, transformer, eta, h), size)[0, 0].numpy()
    fine = None if v is None else (mask * np.asarray(v, dtype=np.float32)).astype(np.float32)
    return mask.astype(np.float32), fine


def coarse_size(input_size: tuple[int, int]) -> tuple[int, int]:
    """The coarse mask's size: 1/4 of the input (56×56 at 224, Section 3.2)."""
    return (max(1, int(input_size[0]) // 4), max(1, int(input_size[1]) // 4))
