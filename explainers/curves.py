"""Perturbation curves of a saliency map and the metrics read from them: M_F (paper 003, Eq. 8),
deletion and insertion (RISE), and VarSal's KL curve (paper 002, Section 4.4).

The pixels are ranked by the map and blended, a tie group proportionally, between the image and a
reference; the perturbed images are built in one tensor per batch and run through the classifier
(a :class:`~explainers.classifiers.base.Classifier`, or a callable returning class probabilities)
in batches on its device. :mod:`explainers.metrics` lists every metric and re-exports these.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

from .classifiers.base import Classifier
from .errors import ExplainerError
from .methods.references import blur

ArrayLike = Union[np.ndarray, torch.Tensor]


# ---------------------------------------------------------------------------------------------
# helpers


def _np(a: ArrayLike) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _map2d(saliency: ArrayLike) -> np.ndarray:
    s = np.asarray(_np(saliency), dtype=np.float64)
    s = np.squeeze(s)
    if s.ndim != 2:
        raise ExplainerError(f"a saliency map must be (H, W), got shape {np.shape(saliency)}")
    if not np.all(np.isfinite(s)):
        raise ExplainerError("the saliency map has NaN or infinite values")
    return s


def reveal_masks(saliency: ArrayLike, fractions: Sequence[float]) -> np.ndarray:
    """Float (S, H, W) masks keeping the top ``f·N`` pixels of ``saliency`` for each fraction
    ``f`` (1 = kept, 0 = perturbed). A tie group cut by the count is kept fractionally: each of
    its pixels gets (count still to keep) / (size of the group)."""
    s = _map2d(saliency)
    flat = s.ravel()
    n = flat.size
    srt = np.sort(flat)[::-1]
    out = np.zeros((len(fractions), n), dtype=np.float64)
    for k, f in enumerate(fractions):
        c = int(round(float(f) * n))
        if c <= 0:
            continue
        if c >= n:
            out[k] = 1.0
            continue
        t = srt[c - 1]
        above = flat > t
        tie = flat == t
        out[k, above] = 1.0
        out[k, tie] = (c - int(above.sum())) / int(tie.sum())
    return out.reshape(len(fractions), *s.shape)


# ---------------------------------------------------------------------------------------------
# M_F (paper 003, Eq. 8)


def faithfulness_curve(
    clf: Any,
    x01: torch.Tensor,
    saliency: ArrayLike,
    target: int,
    delta: float = 1 / 32,
    reference: Optional[torch.Tensor] = None,
    blur_sigma: Optional[float] = None,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """``(fractions, q)``: the target's probability with the top ``fraction`` of pixels revealed
    and the rest taken from ``reference`` (default: the image blurred with σ = ``blur_sigma``,
    side/16 when None, as paper 003 perturbs with a Gaussian-blurred copy), for fractions
    0, Δ, 2Δ, …, 1. ``q[0]`` is q_F (fully perturbed), ``q[-1]`` is q_O (the image)."""
    if not (0 < float(delta) <= 1):
        raise ExplainerError(f"delta must be in (0, 1], got {delta}")
    x = torch.as_tensor(x01).float()
    if x.dim() == 3:
        x = x.unsqueeze(0)
    s = _map2d(saliency)
    if tuple(x.shape[-2:]) != s.shape:
        raise ExplainerError(f"the map is {s.shape}, the image {tuple(x.shape[-2:])}")
    steps = int(round(1 / float(delta)))
    fractions = np.linspace(0.0, 1.0, steps + 1)
    if reference is None:
        sigma = blur_sigma if blur_sigma is not None else min(s.shape) / 16.0
        reference = blur(x, sigma)
    ref = torch.as_tensor(reference).to(x.device, x.dtype).expand_as(x)
    keep = torch.from_numpy(reveal_masks(s, fractions)).to(x.device, x.dtype).unsqueeze(1)
    xs = x * keep + ref * (1 - keep)
    with torch.no_grad():
        q = _probs_fn(clf, batch_size)(xs)[:, int(target)]
    return fractions, _np(q).astype(np.float64)


def m_f(
    clf: Any,
    x01: torch.Tensor,
    saliency: ArrayLike,
    target: int,
    delta: float = 1 / 32,
    reference: Optional[torch.Tensor] = None,
    blur_sigma: Optional[float] = None,
    subtract_floor: bool = True,
    batch_size: int = 64,
) -> float:
    """Faithfulness M_F in percent (paper 003, Eq. 8)::

        M_F = Σ_{i=1}^{1/Δ} (q_i − q_F) / (q_O − q_F) · Δ × 100%

    ``q_i`` is the target's probability with the top ``iΔ`` of the pixels (by ``saliency``)
    revealed and the others perturbed (see :func:`faithfulness_curve`). Eq. 8 as printed has
    ``q_i`` in the numerator; with ``subtract_floor`` (default) ``q_F`` is subtracted so that a
    map reaching the full probability at once scores 100% and the score does not depend on how
    likely the class is on the perturbed image (the same reading when ``q_F`` = 0);
    ``subtract_floor=False`` gives the printed formula. Higher is better. Ties between map
    values are revealed proportionally (no position order). Returns NaN when ``q_O = q_F``.

    ``clf`` is a :class:`~explainers.classifiers.base.Classifier` or a callable returning class
    probabilities (B, C) for pixel batches (B, 3, H, W).
    """
    _, q = faithfulness_curve(clf, x01, saliency, target, delta, reference, blur_sigma, batch_size)
    q_f, q_o = q[0], q[-1]
    if q_o == q_f:
        return float("nan")
    num = q[1:] - q_f if subtract_floor else q[1:]
    return float(np.sum(num / (q_o - q_f)) * (1.0 / (len(q) - 1)) * 100.0)


# ---------------------------------------------------------------------------------------------
# deletion, insertion and the KL curve

BASELINES = ("black", "blur", "mean", "grey")


def baseline_image(x01: torch.Tensor, baseline: Any = "black", blur_sigma: Optional[float] = None) -> torch.Tensor:
    """The image that removed pixels are replaced by, shaped like ``x01`` (B, 3, H, W):

    - ``"black"`` (or the number 0): zeros, RISE's deletion substrate;
    - ``"blur"``: ``x01`` blurred with σ = ``blur_sigma`` (None: side/16, the same reference as
      :func:`m_f`; RISE used σ = 5 px at 224, i.e. side/45);
    - ``"mean"``: the image's mean colour; ``"grey"``: 0.5;
    - a number in [0, 1]: that grey level; a tensor broadcastable to ``x01``: itself.
    """
    if isinstance(baseline, torch.Tensor):
        return baseline.to(x01.device, x01.dtype).expand_as(x01)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x01, float(baseline))
    if baseline == "black":
        return torch.zeros_like(x01)
    if baseline == "grey":
        return torch.full_like(x01, 0.5)
    if baseline == "mean":
        return x01.mean(dim=(-2, -1), keepdim=True).expand_as(x01)
    if baseline == "blur":
        sigma = blur_sigma if blur_sigma is not None else min(x01.shape[-2:]) / 16.0
        return blur(x01, sigma)
    raise ExplainerError(f"unknown baseline {baseline!r}; use one of {', '.join(BASELINES)}, a grey level or an image tensor")


def _image(clf: Any, x01: Any, s: np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(x01).float()
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[0] != 1:
        raise ExplainerError(f"the image must be (3, H, W) or (1, 3, H, W), got {tuple(x.shape)}")
    if tuple(x.shape[-2:]) != s.shape:
        raise ExplainerError(f"the map is {s.shape}, the image {tuple(x.shape[-2:])}")
    dev = getattr(clf, "device", None)
    return x.to(dev) if isinstance(dev, torch.device) else x


def _probs_fn(clf: Any, batch_size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x01 (B, 3, H, W) -> class probabilities (B, C)`` from a Classifier or a callable that
    returns class probabilities (B, C)."""

    if isinstance(clf, Classifier):
        return lambda x: clf.probabilities(x, batch_size=batch_size)
    if callable(clf):
        return lambda x: torch.cat([torch.as_tensor(clf(x[i : i + batch_size])) for i in range(0, x.shape[0], batch_size)])
    raise ExplainerError("a metric needs a Classifier or a callable returning class probabilities")


def _blend_curve(clf, x, keep: np.ndarray, ref: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Probabilities (S, C) of ``x·keep + ref·(1 − keep)`` for each of the S masks, in batches."""
    if batch_size < 1:
        raise ExplainerError("batch_size must be at least 1")
    probs = _probs_fn(clf, batch_size)
    out = []
    with torch.no_grad():
        for i in range(0, keep.shape[0], batch_size):
            k = torch.from_numpy(keep[i : i + batch_size]).to(x.device, x.dtype).unsqueeze(1)
            out.append(probs(x * k + ref * (1 - k)).float().cpu())
    return torch.cat(out)


def _fractions(steps: int) -> np.ndarray:
    if int(steps) != steps or steps < 1:
        raise ExplainerError(f"steps must be a positive integer, got {steps}")
    return np.linspace(0.0, 1.0, int(steps) + 1)


def _ranked_curve(clf, x01, saliency, target, steps, baseline, blur_sigma, batch_size, delete: bool):
    """The target's probability as the top fractions of the ranked pixels are taken from the
    baseline (``delete``) or from the image (insertion), the rest from the other."""
    s = _map2d(saliency)
    x = _image(clf, x01, s)
    fr = _fractions(steps)
    revealed = reveal_masks(s, fr)
    keep = 1.0 - revealed if delete else revealed
    p = _blend_curve(clf, x, keep, baseline_image(x, baseline, blur_sigma), batch_size)
    return fr, p[:, int(target)].numpy().astype(np.float64)


def deletion_curve(
    clf: Any,
    x01: Any,
    saliency: ArrayLike,
    target: int,
    steps: int = 32,
    baseline: Any = "black",
    blur_sigma: Optional[float] = None,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """``(fractions, p)``: the probability of ``target`` after the top ``fraction`` of the pixels
    (by ``saliency``) are replaced by ``baseline`` (see :func:`baseline_image`; default black, as
    RISE), for ``steps + 1`` evenly spaced fractions 0 … 1. ``p[0]`` is the image's probability."""
    return _ranked_curve(clf, x01, saliency, target, steps, baseline, blur_sigma, batch_size, delete=True)


def insertion_curve(
    clf: Any,
    x01: Any,
    saliency: ArrayLike,
    target: int,
    steps: int = 32,
    baseline: Any = "blur",
    blur_sigma: Optional[float] = None,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """``(fractions, p)``: the probability of ``target`` when only the top ``fraction`` of the
    pixels are taken from the image and the rest from ``baseline`` (default: the blurred image,
    as RISE). ``p[0]`` is the baseline's probability, ``p[-1]`` the image's. With the default
    blur this is :func:`faithfulness_curve` (M_F's curve) at ``delta = 1/steps``."""
    return _ranked_curve(clf, x01, saliency, target, steps, baseline, blur_sigma, batch_size, delete=False)


def auc(fractions: ArrayLike, values: ArrayLike) -> float:
    """Trapezoidal area under ``values`` over ``fractions`` (a curve on [0, 1] gives its mean height)."""
    return float(np.trapezoid(np.asarray(values, dtype=np.float64), np.asarray(fractions, dtype=np.float64)))


def deletion_auc(clf: Any, x01: Any, saliency: ArrayLike, target: int, steps: int = 32, baseline: Any = "black",
                 blur_sigma: Optional[float] = None, batch_size: int = 64) -> float:
    """Deletion AUC (RISE; paper 000, Sec. IV-B): area under :func:`deletion_curve`, in [0, 1].
    Lower is better: the probability falls fast when the pixels the map ranks first go."""
    return auc(*deletion_curve(clf, x01, saliency, target, steps, baseline, blur_sigma, batch_size))


def insertion_auc(clf: Any, x01: Any, saliency: ArrayLike, target: int, steps: int = 32, baseline: Any = "blur",
                  blur_sigma: Optional[float] = None, batch_size: int = 64) -> float:
    """Insertion AUC (RISE): area under :func:`insertion_curve`, in [0, 1]. Higher is better."""
    return auc(*insertion_curve(clf, x01, saliency, target, steps, baseline, blur_sigma, batch_size))


def kl_curve(
    clf: Any,
    x01: Any,
    saliency: ArrayLike,
    fractions: Optional[Sequence[float]] = None,
    baseline: Any = "black",
    blur_sigma: Optional[float] = None,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """VarSal's pixel-perturbation benchmark (paper 002, Section 4.4): ``(fractions, kl)`` with
    ``kl[i]`` = KL(p(Y|x) ‖ p(Y|x̃_i)) in nats, where x̃_i has the *least* salient ``fractions[i]``
    of the pixels set to zero ("we change pixel values of the input image to zero that correspond
    to the least k% values in the saliency map"; zero in pixel space = black; ``baseline``
    changes it, see :func:`baseline_image`). The whole predictive distribution is compared, so no
    target is needed. Lower is better. Default fractions 0.1, 0.2, …, 0.9. The paper's control
    is the same curve for a random map (:func:`random_map`)."""
    s = _map2d(saliency)
    x = _image(clf, x01, s)
    fr = np.arange(1, 10) / 10.0 if fractions is None else np.asarray(fractions, dtype=np.float64).ravel()
    if fr.size == 0 or np.any(fr < 0) or np.any(fr > 1):
        raise ExplainerError("kl_curve: fractions must lie in [0, 1]")
    keep = reveal_masks(s, 1.0 - fr)  # keep the top (1 − k), i.e. perturb the least salient k
    q = _blend_curve(clf, x, keep, baseline_image(x, baseline, blur_sigma), batch_size).double()
    p = _blend_curve(clf, x, np.ones((1, *s.shape)), x, batch_size).double()
    eps = 1e-12
    kl = (p * (torch.log(p.clamp_min(eps)) - torch.log(q.clamp_min(eps)))).sum(dim=1).clamp_min(0.0)
    return fr, kl.numpy()


def kl_auc(clf: Any, x01: Any, saliency: ArrayLike, **kwargs: Any) -> float:
    """Mean of :func:`kl_curve` over its fractions (one number for tables). Lower is better."""
    return float(np.mean(kl_curve(clf, x01, saliency, **kwargs)[1]))
