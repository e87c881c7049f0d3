"""Reference images ("baselines") that perturbation methods blend in where evidence is removed.

Shared by PMI's simple samplers, DSSR+'s reference r, VarSal's baselines and the distribution
controller's background A. All work in pixel space ((B, 3, H, W) in [0, 1]) on the input's device,
and draw randomness only from the ``torch.Generator`` they are given.

:func:`least_informative` ranks references by how much class evidence a classifier reads in them
(a reference meant to remove evidence should leave the prediction close to uniform);
:func:`auto_reference` makes that choice once per classifier, on a few probe images: blur when the
blurred probes lose their own classes outright (:data:`BLUR_KEEPS`), else the least informative.
"""
from __future__ import annotations

import math
import threading
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

KINDS = ("noise", "blur", "constant", "mean")
AUTO_CANDIDATES = ("noise", "blur", "mean")  # "constant" needs a grey level, which would be one more choice
# auto prefers blur when the blurred probes keep at most this share of their own class's probability
# (ours; issue 24). Measured shares: efficientnet-lite0 0.007 on its 4 photographs; the shapes
# networks 0.19-0.20 (chance level on 6 classes), digits-cnn 0.27, digits-mlp 0.55. The bound keeps
# the small networks' least-evidence choices as they were and gives photograph networks blur.
BLUR_KEEPS = 0.05
PROBES = 16  # probe images for the automatic choice (the built-in validation split's first ones)


def gaussian_kernel1d(sigma: float, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def blur(x01: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding (sigma in pixels; 0 returns the input)."""
    if sigma <= 0:
        return x01
    k = gaussian_kernel1d(sigma, x01.device, x01.dtype)
    c = x01.shape[1]
    r = (k.numel() - 1) // 2
    h, w = x01.shape[-2:]
    # reflect padding needs pad < size; fall back to replicate on tiny inputs
    mode = "reflect" if r < min(h, w) else "replicate"
    y = F.pad(x01, (r, r, 0, 0), mode=mode)
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, r, r), mode=mode)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def reference(
    kind: str,
    x01: torch.Tensor,
    generator: Optional[torch.Generator] = None,
    value: float = 0.5,
    sigma: Optional[float] = None,
) -> torch.Tensor:
    """A reference image the size of ``x01``.

    - ``noise``: uniform U(0, 1) per pixel and channel (DSSR+'s default);
    - ``blur``: ``x01`` blurred with ``sigma`` (default: 1/16 of the shorter side, 14 px at 224);
    - ``constant``: grey level ``value`` in [0, 1] (before the classifier's normalisation);
    - ``mean``: each image's mean colour.
    """
    if kind == "noise":
        gdev = generator.device if generator is not None else x01.device
        return torch.rand(x01.shape, generator=generator, device=gdev, dtype=x01.dtype).to(x01.device)
    if kind == "blur":
        s = sigma if sigma is not None else min(x01.shape[-2:]) / 16.0
        return blur(x01, s)
    if kind == "constant":
        return torch.full_like(x01, float(value))
    if kind == "mean":
        return x01.mean(dim=(2, 3), keepdim=True).expand_as(x01).clone()
    from ..errors import ExplainerError

    raise ExplainerError(f"unknown reference {kind!r}; choose one of {', '.join(KINDS)}")



# ----------------------------------------------------------------------------- automatic choice
def class_evidence(clf, r01: torch.Tensor) -> torch.Tensor:
    """KL(p(· | r) || uniform) = log C − H(p) in nats, per image of ``r01`` (B, 3, H, W): 0 when the
    classifier reads nothing in ``r``, log C when it is certain of one class."""
    with torch.no_grad():
        logp = torch.log_softmax(clf.logits01(r01.to(clf.device)).double(), dim=1)
    return (math.log(logp.shape[1]) + (logp.exp() * logp).sum(dim=1)).float().cpu()


def least_informative(
    clf, probes01: torch.Tensor, kinds: Sequence[str] = AUTO_CANDIDATES, seed: int = 0
) -> tuple[str, dict[str, float]]:
    """(kind, {kind: mean class evidence}) for the reference among ``kinds`` whose predictions on
    the ``probes01`` (B, 3, H, W) images are closest to uniform (the least mean KL to uniform; ties
    go to the earlier kind). Noise is one draw per probe image from ``seed``."""
    gen = torch.Generator().manual_seed(int(seed))
    scores = {k: float(class_evidence(clf, reference(k, probes01.cpu(), gen)).mean()) for k in kinds}
    return min(kinds, key=lambda k: scores[k]), scores


def class_kept(clf, probes01: torch.Tensor, kind: str, seed: int = 0) -> float:
    """The share of the probes' own (top-1) class probability that survives when each probe is
    replaced by its reference ``kind``: mean p_c(r) / mean p_c(x) over the probes (0 = gone)."""
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        p = torch.softmax(clf.logits01(probes01.to(clf.device)).double(), dim=1)
        c = p.argmax(dim=1, keepdim=True)
        q = torch.softmax(clf.logits01(reference(kind, probes01.cpu(), gen).to(clf.device)).double(), dim=1)
    return float(q.gather(1, c).mean() / p.gather(1, c).mean().clamp_min(1e-12))


def probe_images(clf) -> tuple[torch.Tensor, str]:
    """(probes (B, 3, H, W) in [0, 1], where from): the first ``PROBES`` validation images of the
    built-in data set the classifier was trained on, else scikit-image's photographs (what the
    app offers ImageNet models)."""
    from ..data import load_dataset
    from ..data.samples import samples
    from ..errors import ExplainerError

    if clf.dataset:
        try:
            ds = load_dataset(clf.dataset, "val", limit=PROBES)
            if len(ds):
                return torch.stack([clf.pixels(it.image) for it in ds]), f"{clf.dataset} val, first {len(ds)}"
        except ExplainerError:
            pass
    photos = [s for s in samples(photos=True) if s.dataset == "photos"]
    return torch.stack([clf.pixels(s.image) for s in photos]), f"{len(photos)} photographs"


_AUTO: dict[tuple, dict] = {}
_AUTO_LOCK = threading.Lock()


def auto_reference(clf) -> dict:
    """The reference DSSR+'s ``reference="auto"`` uses for ``clf``, chosen once per classifier
    (cached on its id, input size and weights digest): ``{"kind", "scores", "probes", "blur_keeps"}``
    with the mean class evidence of each candidate on the probe images (:func:`least_informative`)
    and the share of the probes' own class the blurred probes keep (:func:`class_kept`).

    Blur when that share is at most :data:`BLUR_KEEPS`, else the least informative candidate. Why
    blur first (issue 24): the least-evidence test looks at the reference alone, and on
    EfficientNet-Lite0 it picked the mean colour, against which a faint cut-out wins Eq. 5's
    preservation term. On the rocket photograph (300 iterations) m̄ never exceeded 0.33 after
    iteration 60, yet f(preserved) = 0.87 > f(x) = 0.38 while f(deleted) stayed at 0.32: the mask
    settled on a silhouette that is *sufficient* on a flat field, and blurring its top 10% raised
    "missile" (drop −0.13). Blur keeps the photograph's low frequencies in both composites (Fong &
    Vedaldi's reference), so neither is a cut-out on an empty field; with it the same run drops
    0.149 and the seven photographs 1.01× Occlusion (mean colour 0.74×, noise in the README). Where
    the blurred probes still read as their own class (digits) blur would break the game as noise
    does on shapes-resnet, so the least-evidence choice stands there."""
    key = (clf.id, tuple(clf.input_size), clf.weights_digest())
    with _AUTO_LOCK:
        hit = _AUTO.get(key)
    if hit is None:
        probes, where = probe_images(clf)
        kind, scores = least_informative(clf, probes)
        keeps = class_kept(clf, probes, "blur")
        if keeps <= BLUR_KEEPS:
            kind = "blur"
        hit = {"kind": kind, "scores": scores, "probes": where, "blur_keeps": round(keeps, 4)}
        with _AUTO_LOCK:
            _AUTO[key] = hit
    return dict(hit, scores=dict(hit["scores"]))
