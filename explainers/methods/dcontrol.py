"""Distribution-guided local explanation: a mask predictor with a distribution controller
(paper 003, Section 3, Appendix A).

The mask of an image ``I`` for class ``c`` is (Eq. 4)::

    M = upsample(C(G(F(I))))

- ``F(I)``: feature maps of the frozen classifier at several depths, captured with forward
  hooks (registered in ``try/finally``, removed after every forward);
- ``G``: the mask generator, U-Net-style (Section 3.1): the deepest feature map goes through the
  feature filter of Appendix A.1 (Eq. 10, ``Y_ij = X_ij · sigmoid(X_ijᵀ C_c)``), is upsampled by
  transposed convolutions and concatenated with the shallower feature maps, each merge followed
  by a bottleneck block; it outputs a coarse map ``M^g`` at 1/4 of the input (56×56 at 224,
  16×16 at 64, 7×7 at 28);
- ``C``: the distribution controller (Section 3.2.2): instance normalisation of ``M^g`` to
  ``z`` (mean 0, variance 1 over the coarse map of each image), then the Basic Transformer
  ``ReLU(z)`` (Eq. 5) or the Customised Transformer ``sigmoid(η z)^h`` (Eq. 6, defaults
  η = 1.5, h = 2.5); :func:`controller_density` is the closed form of Eq. 7;
- ``upsample``: bilinear to the input size.

The generator is trained with the classification loss only (Eq. 4) on the composite
``φ(I, M) = I·M + A·(1 − M)`` (Eq. 1), ``A`` a blurred copy of ``I`` half of the time and a random
colour plus Gaussian noise otherwise (Section 4): ``python -m explainers fit --explainer dcontrol
--model ID --data SOURCE [--set transformer=basic]`` (``explainers/training/dcontrol.py``).
Fits are ``dcontrol-<transformer>.safetensors`` (+ ``.json``) in the user's fit folder or
``assets/explainers/<model id>/``.

Without a fitted generator (an ImageNet model and no data, say) a free coarse map ``P`` is
optimised for the one image under the same controller and loss: ``M = upsample(C(P))``, Adam,
``iterations`` = 300 at ``lr`` = 0.1 (the per-image setting the paper uses for Meaningful
Perturbation, Appendix A.2), a batch of ``backgrounds`` = 4 random backgrounds per step (half blurred, half colour + noise).
``meta["amortised"]`` says which was used.

Fine-tuning (Section 3.3) gives ``mask_finetuned``: with ``r_i`` the i-th highest score and
``q_i`` the target's probability when only the top ``i`` pixels are kept (the rest replaced by
the reference, a blurred copy), ``q`` is made monotone (``q_i = max_{j<=i} q_j``), the extra
importance is ``v_i = q_max − q_i`` and ``r'_i = r_i · v_i``; ``q`` is evaluated at
``finetune_samples`` evenly spaced ``i`` and linearly interpolated in between.

Both maps are raw: ``mask`` in the controller's units (in (0, 1) for the customised transformer,
``[0, ∞)`` standard deviations for the basic one), ``mask_finetuned`` = mask × probability.
``extras`` keep the coarse ``z`` and the per-pixel ``v``, so a page can re-apply the controller
with other η, h (:func:`masks_from_z`) without running the generator or the classifier again:
the controller is monotone, so the ranking — and with it ``v`` — does not change.

Readings of the paper (where it is loose), chosen so that the method works:

- Feature maps: every module's output is recorded once at the input size; for each spatial size
  the module that finishes last is the tap (a stage's container: ``layer1..4`` of a torchvision
  ResNet, ``features`` children of the embedded SmallResNet, the pooling layers of the
  ``nn.Sequential`` VGG / CNN). Taps from the deepest (≥ 2×2) up to twice the coarse size are
  used; finer ones than the coarse mask are average-pooled to it.
- Networks with no spatial feature maps (the digits MLP): the generator gets the image itself
  through a small conv encoder of its own, and the classifier's last hidden layer (the input of
  its last ``nn.Linear``), filtered by Eq. 10 and tiled over the coarse grid.
- Feature filter (A.1): the class embedding ``C`` is pretrained first (maximise
  ``mean sigmoid(Xᵀ C_c)`` for the classifier's class, minimise it for the others) and frozen
  while the rest of the generator is trained.
- ``c`` in Eq. 4 is the classifier's predicted class while training ("only the outputs of the
  classifier are utilized") and the requested target when explaining.
- Eq. 1 is a blend: the mask is clipped to [0, 1] inside the composite (matters for the basic
  transformer only; unclipped, its maximum drifts to the edges just outside the object).
- Background A: the paper blurs with "a variance of 10" at 224 px; taken as σ ≈ 3 px it leaves a
  64 px shape recognisable, so the blur is σ = side/16 (14 px at 224, 4 px at 64; ``blur_sigma``
  overrides it). The random colour is uniform per image, the noise Gaussian with s.d.
  ``noise_std`` = 0.2 (the paper gives none), clipped to [0, 1].
- Fine-tuning ranks pixels by the mask with ties broken by the upsampled ``z`` (the basic
  transformer's zeros have a ranking too); ``i`` counts kept pixels, so ``v_i`` of the pixel of
  rank ``i`` includes it. Ranking is preserved: ``r_i > r_j ⇒ r'_i ≥ r'_j``, strictly wherever
  ``r'_j > 0``; pixels after the (monotone) probability has reached its maximum get 0.
"""
from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..classifiers.base import Classifier
from ..batching import map_chunks
from ..core import MethodOutput, MethodSpec, register
from .. import fitted
from ..errors import ExplainerError
from ..progress import report
from .references import blur as _blur

FIT_NAME = "dcontrol"
TRANSFORMERS = ("customised", "basic")
GENERATORS = ("auto", "fitted", "optimise")
IN_EPS = 1e-5  # instance normalisation's ε (as nn.InstanceNorm2d)

ArrayLike = Union[np.ndarray, torch.Tensor]


def fit_filename(transformer: str) -> str:
    return f"{FIT_NAME}-{transformer}.safetensors"


# ---------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class DControlConfig:
    """The distribution controller's knobs (defaults: the paper's where it gives them).

    - ``transformer`` = "customised": ``sigmoid(η z)^h`` (Eq. 6) or "basic": ``ReLU(z)`` (Eq. 5);
      picks the fitted generator ``dcontrol-<transformer>``.
    - ``eta`` = 1.5, ``h`` = 2.5: the customised transformer's η and h (Section 3.2.3). The
      controller is applied with these values; a fitted generator was trained with the values
      in its JSON (``meta["trained_eta"]``, ``meta["trained_h"]``).
    - ``generator`` = "auto": the fitted generator when there is one, else the per-image
      optimisation; "fitted" requires a fit; "optimise" always optimises a free coarse map.
    - ``fit`` = None: path to a fitted ``.safetensors`` (None = the classifier's fit for the
      transformer: the user's folder first, then ``assets/explainers/<id>/``).
    - ``finetune_samples`` = 64: evenly spaced numbers of kept pixels at which ``q_i`` is
      evaluated (Section 3.3), linear interpolation in between.
    - ``finetune_sigma`` = None: blur σ (px) of the fine-tuning's reference (None = side/16).
    - ``iterations`` = 300, ``lr`` = 0.1, ``backgrounds`` = 4: the per-image optimisation
      (Adam steps, learning rate, random backgrounds per step, half of them blurred: stratified).
    - ``blur_sigma`` = None (side/16), ``noise_std`` = 0.2, ``p_blur`` = 0.5: the random
      backgrounds A of the per-image optimisation, as in training.
    - ``batch_size`` = 64: images per classifier forward when fine-tuning (halved on CUDA OOM).
    - ``seed`` = 0: the per-image optimisation's initial map and backgrounds.
    """

    transformer: str = field(default="customised", metadata={"choices": TRANSFORMERS, "help": "customised: sigmoid(η z)^h (Eq. 6); basic: ReLU(z) (Eq. 5)"})
    eta: float = field(default=1.5, metadata={"help": "η of the customised transformer (Eq. 6)"})
    h: float = field(default=2.5, metadata={"help": "h of the customised transformer (Eq. 6)"})
    generator: str = field(default="auto", metadata={"choices": GENERATORS, "help": "fitted generator, per-image optimisation, or auto"})
    fit: Optional[str] = field(default=None, metadata={"help": "fitted generator (.safetensors); empty = the classifier's fit"})
    finetune_samples: int = field(default=64, metadata={"help": "numbers of kept pixels where q is evaluated (Section 3.3)"})
    finetune_sigma: Optional[float] = field(default=None, metadata={"help": "blur σ of the fine-tuning reference (px; empty = side/16)"})
    iterations: int = field(default=300, metadata={"help": "Adam steps of the per-image optimisation"})
    lr: float = field(default=0.1, metadata={"help": "learning rate of the per-image optimisation"})
    backgrounds: int = field(default=4, metadata={"help": "random backgrounds per optimisation step"})
    blur_sigma: Optional[float] = field(default=None, metadata={"help": "blur σ of the random backgrounds (px; empty = side/16)"})
    noise_std: float = field(default=0.2, metadata={"help": "s.d. of the noise on random-colour backgrounds"})
    p_blur: float = field(default=0.5, metadata={"help": "probability that a background is the blurred image"})
    batch_size: int = field(default=64, metadata={"help": "images per forward when fine-tuning"})
    seed: int = field(default=0, metadata={"help": "seed of the per-image optimisation"})

    def __post_init__(self) -> None:
        if self.transformer not in TRANSFORMERS:
            raise ExplainerError(f"dcontrol: transformer must be one of {', '.join(TRANSFORMERS)}, got {self.transformer!r}")
        if self.generator not in GENERATORS:
            raise ExplainerError(f"dcontrol: generator must be one of {', '.join(GENERATORS)}, got {self.generator!r}")
        check_eta_h(self.eta, self.h)
        _int_at_least("finetune_samples", self.finetune_samples, 1)
        _int_at_least("iterations", self.iterations, 0)
        _int_at_least("backgrounds", self.backgrounds, 1)
        _int_at_least("batch_size", self.batch_size, 1)
        _int_at_least("seed", self.seed, 0)
        _positive("lr", self.lr)
        for name in ("finetune_sigma", "blur_sigma"):
            v = getattr(self, name)
            if v is not None:
                _positive(name, v, allow_zero=True)
        _positive("noise_std", self.noise_std, allow_zero=True)
        if not (isinstance(self.p_blur, (int, float)) and 0.0 <= float(self.p_blur) <= 1.0):
            raise ExplainerError(f"dcontrol: p_blur must be in [0, 1], got {self.p_blur!r}")
        if self.fit is not None and not isinstance(self.fit, (str, Path)):
            raise ExplainerError(f"dcontrol: fit must be a path, got {self.fit!r}")


def _int_at_least(name: str, v: Any, lo: int) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < lo:
        raise ExplainerError(f"dcontrol: {name} must be an integer >= {lo}, got {v!r}")


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


# ---------------------------------------------------------------------------------------------
# the distribution controller (Section 3.2.2, Eq. 5–7)


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
    if transformer not in TRANSFORMERS:
        raise ExplainerError(f"dcontrol: transformer must be one of {', '.join(TRANSFORMERS)}, got {transformer!r}")
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
    if transformer not in TRANSFORMERS:
        raise ExplainerError(f"dcontrol: transformer must be one of {', '.join(TRANSFORMERS)}, got {transformer!r}")
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


# ---------------------------------------------------------------------------------------------
# backgrounds A (Section 4)


def backgrounds(
    x01: torch.Tensor,
    gen: torch.Generator,
    p_blur: float = 0.5,
    blur_sigma: Optional[float] = None,
    noise_std: float = 0.2,
    stratified: bool = False,
) -> torch.Tensor:
    """One background per image: the blurred image with probability ``p_blur``, otherwise a
    uniform random colour plus Gaussian noise (s.d. ``noise_std``), clipped to [0, 1].
    ``stratified``: exactly ``round(p_blur · B)`` of the B backgrounds are blurred (less variance
    for the per-image optimisation, whose batch is copies of one image)."""
    b = x01.shape[0]
    gdev = gen.device
    sigma = blur_sigma if blur_sigma is not None else min(x01.shape[-2:]) / 16.0
    u = torch.rand(b, generator=gen, device=gdev)
    if stratified:
        pick = torch.arange(b, device=gdev) < int(round(p_blur * b))
    else:
        pick = u < p_blur
    pick = pick.to(x01.device).view(b, 1, 1, 1)
    colour = torch.rand(b, 3, 1, 1, generator=gen, device=gdev).to(x01.device, x01.dtype)
    noise = torch.randn(x01.shape, generator=gen, device=gdev).to(x01.device, x01.dtype)
    out = (colour + noise_std * noise).clamp(0, 1)
    idx = pick.view(b).nonzero().flatten()
    if idx.numel():  # blur only the images that use it
        out = out.index_copy(0, idx, _blur(x01.index_select(0, idx), sigma))
    return out


def composite(x01: torch.Tensor, mask: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """``φ(I, M) = I·M + A·(1 − M)`` (Eq. 1), with the blending weight ``M`` clipped to [0, 1].

    The customised transformer's scores are in (0, 1) already; the basic one's ``ReLU(z)`` reach
    3 or more, and an unclipped weight above 1 extrapolates the image away from A (more contrast
    than the image has) — the generator learns to put its highest scores on the object's edges,
    just outside it. Clipping keeps Eq. 1 a blend; the map itself keeps the unclipped scores."""
    m = mask.clamp(0, 1)
    return x01 * m + background * (1 - m)


# ---------------------------------------------------------------------------------------------
# the classifier's feature maps F(I)


def probe_plan(clf: Classifier, width: int = 32) -> dict:
    """Which feature maps the generator uses: one forward at the input size with a hook on every
    module (removed after). Returns a JSON-able plan, stored with a fit."""
    net = clf.net
    h, w = clf.input_size
    last: dict[str, tuple[int, tuple]] = {}
    lin_in: dict[str, tuple[int, int]] = {}
    counter = [0]
    handles = []
    me = threading.get_ident()  # the net is shared by sessions: ignore forwards of other threads

    def out_hook(name):
        def hook(_m, _inp, out):
            if threading.get_ident() != me:
                return
            counter[0] += 1
            if isinstance(out, torch.Tensor):
                last[name] = (counter[0], tuple(out.shape))
        return hook

    def lin_hook(name):
        def hook(_m, inp):
            if threading.get_ident() != me:
                return
            counter[0] += 1
            if inp and isinstance(inp[0], torch.Tensor):
                lin_in[name] = (counter[0], int(inp[0].shape[-1]))
        return hook

    try:
        for name, m in net.named_modules():
            if name == "":
                continue
            handles.append(m.register_forward_hook(out_hook(name)))
            if isinstance(m, nn.Linear):
                handles.append(m.register_forward_pre_hook(lin_hook(name)))
        with torch.no_grad():
            logits = clf.logits01(torch.full((1, 3, h, w), 0.5, device=clf.device))
    finally:
        for hd in handles:
            hd.remove()
    num_classes = int(logits.shape[-1])
    ch, cw = coarse_size((h, w))
    by_size: dict[tuple[int, int], tuple[int, str, int]] = {}
    for name, (order, shape) in last.items():
        if len(shape) != 4 or min(shape[-2:]) < 2:
            continue
        size = (int(shape[-2]), int(shape[-1]))
        if size[0] > 2 * ch or size[1] > 2 * cw:
            continue
        if size not in by_size or order > by_size[size][0]:
            by_size[size] = (order, name, int(shape[1]))
    in_ch = 1 if clf.grayscale else 3
    base = {"input_size": [h, w], "coarse": [ch, cw], "num_classes": num_classes, "width": int(width), "in_channels": in_ch}
    if by_size:
        taps = [
            {"name": name, "channels": c, "size": list(size)}
            for size, (_, name, c) in sorted(by_size.items(), key=lambda kv: (kv[0][0] * kv[0][1], kv[1][0]))
        ]
        return {**base, "mode": "conv", "taps": taps}
    if not lin_in:
        raise ExplainerError(
            f"dcontrol: {clf.id} has neither convolutional feature maps nor a final Linear layer to build the mask generator on"
        )
    name, (_, c) = max(lin_in.items(), key=lambda kv: kv[1][0])
    return {**base, "mode": "vector", "taps": [], "vector": {"name": name, "channels": c}}


def capture(clf: Classifier, x01: torch.Tensor, plan: dict) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Run the classifier on ``x01`` and return ``(feature maps by tap name, logits)``.

    Hooks are registered for this forward only and always removed (``try/finally``). The network
    is shared by every browser session, so another thread may run it while our hooks are on: each
    hook records only the forwards of the thread that registered it."""
    modules = dict(clf.net.named_modules())
    feats: dict[str, torch.Tensor] = {}
    handles = []
    me = threading.get_ident()

    def out_hook(name):
        def hook(_m, _inp, out):
            if threading.get_ident() == me:
                feats[name] = out
        return hook

    def in_hook(name):
        def hook(_m, inp):
            if threading.get_ident() == me:
                feats[name] = inp[0].flatten(1)
        return hook

    try:
        for t in plan["taps"]:
            if t["name"] not in modules:
                raise ExplainerError(f"dcontrol: the fitted generator expects layer {t['name']!r}, which {clf.id} does not have")
            handles.append(modules[t["name"]].register_forward_hook(out_hook(t["name"])))
        if plan["mode"] == "vector":
            name = plan["vector"]["name"]
            if name not in modules:
                raise ExplainerError(f"dcontrol: the fitted generator expects layer {name!r}, which {clf.id} does not have")
            handles.append(modules[name].register_forward_pre_hook(in_hook(name)))
        logits = clf.logits01(x01)
    finally:
        for hd in handles:
            hd.remove()
    return feats, logits


# ---------------------------------------------------------------------------------------------
# the mask generator G (Section 3.1, Appendix A.1)


def _cbr(cin: int, cout: int, k: int = 1, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1×1 reduce, 3×3, 1×1 expand, residual (projected when shapes differ)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = max(4, cout // 2)
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
            nn.Conv2d(mid, mid, 3, 1, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.short = nn.Identity() if cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.short(x))


class FeatureFilter(nn.Module):
    """Appendix A.1, Eq. 10: ``Y_ij = X_ij · sigmoid(X_ijᵀ C_c)`` with a class embedding ``C``."""

    def __init__(self, num_classes: int, channels: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.zeros(num_classes, channels))

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """``X_ijᵀ C_k`` for every class: (B, K, H, W) for maps (B, C, H, W), (B, K) for vectors."""
        if x.dim() == 4:
            return torch.einsum("bchw,kc->bkhw", x, self.embedding)
        return x @ self.embedding.t()

    def forward(self, x: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        emb = self.embedding[cls]  # (B, C)
        if x.dim() == 4:
            s = torch.einsum("bchw,bc->bhw", x, emb).unsqueeze(1)
        else:
            s = (x * emb).sum(dim=1, keepdim=True)
        return x * torch.sigmoid(s)

    def pretrain_loss(self, x: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """A.1: maximise mean(sigmoid(Xᵀ C_c)) for the class, minimise it for the other classes."""
        s = torch.sigmoid(self.scores(x))
        s = s.flatten(2).mean(-1) if s.dim() == 4 else s  # (B, K)
        onehot = F.one_hot(cls, s.shape[1]).to(s.dtype)
        pos = (s * onehot).sum(1)
        neg = (s * (1 - onehot)).sum(1) / max(1, s.shape[1] - 1)
        return (neg - pos).mean()


class MaskGenerator(nn.Module):
    """U-Net-style generator on the classifier's feature maps (Section 3.1): outputs ``M^g``
    (B, 1, h, w) at the coarse size. Built from a plan (:func:`probe_plan`)."""

    def __init__(self, plan: dict):
        super().__init__()
        self.plan = plan
        # the layers' default initialisation draws from the global RNG: fork it so that building a
        # generator leaves the caller's random state alone (weights come from init_generator or a fit)
        with torch.random.fork_rng(devices=[]):
            self._build(plan)

    def _build(self, plan: dict) -> None:
        w = int(plan["width"])
        ch, cw = plan["coarse"]
        self.coarse = (int(ch), int(cw))
        half = max(4, w // 2)
        if plan["mode"] == "conv":
            taps = plan["taps"]
            deep = taps[0]
            self.filter = FeatureFilter(plan["num_classes"], deep["channels"])
            self.stem = _cbr(deep["channels"], w)
            self.up_names: list[str] = []
            self.ups = nn.ModuleList()
            self.skips = nn.ModuleList()
            self.blocks = nn.ModuleList()
            size = tuple(deep["size"])
            for t in taps[1:]:
                if t["size"][0] > ch or t["size"][1] > cw:
                    continue
                self.up_names.append(t["name"])
                self.ups.append(self._up(w))
                self.skips.append(_cbr(t["channels"], half))
                self.blocks.append(Bottleneck(w + half, w))
                size = tuple(t["size"])
            self.extra_ups = nn.ModuleList()
            while size[0] < ch or size[1] < cw:  # no tap at the coarse size: keep upsampling
                self.extra_ups.append(nn.Sequential(self._up(w), Bottleneck(w, w)))
                size = (size[0] * 2, size[1] * 2)
            self.fine_names = [t["name"] for t in taps[1:] if t["size"][0] > ch or t["size"][1] > cw]
            self.fine = nn.ModuleList([_cbr(t["channels"], half) for t in taps[1:] if t["name"] in self.fine_names])
            self.fine_block = Bottleneck(w + half * len(self.fine_names), w) if self.fine_names else None
        else:
            c = plan["vector"]["channels"]
            self.filter = FeatureFilter(plan["num_classes"], c)
            self.vec = nn.Sequential(nn.Linear(c, w), nn.ReLU())
            layers: list[nn.Module] = [_cbr(plan["in_channels"], half, 3)]
            side, cin = plan["input_size"][0], half
            while side // 2 >= ch and side > ch:
                layers.append(_cbr(cin, w, 3, 2))
                cin, side = w, (side + 1) // 2
            self.encoder = nn.Sequential(*layers)
            self.enc_channels = cin
            self.merge = nn.Sequential(Bottleneck(cin + w, w), Bottleneck(w, w))
        self.head = nn.Conv2d(w, 1, 3, 1, 1)

    @staticmethod
    def _up(w: int) -> nn.Sequential:
        return nn.Sequential(nn.ConvTranspose2d(w, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())

    @staticmethod
    def _fit(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        if x.shape[-2] > size[0]:
            return F.adaptive_avg_pool2d(x, size)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def forward(self, feats: dict[str, torch.Tensor], cls: torch.Tensor, image: Optional[torch.Tensor] = None) -> torch.Tensor:
        plan = self.plan
        if plan["mode"] == "conv":
            deep = feats[plan["taps"][0]["name"]].float()
            y = self.stem(self.filter(deep, cls))
            for name, up, skip, block in zip(self.up_names, self.ups, self.skips, self.blocks):
                s = feats[name].float()
                y = self._fit(up(y), tuple(s.shape[-2:]))
                y = block(torch.cat([y, skip(s)], dim=1))
            for m in self.extra_ups:
                y = m(y)
            y = self._fit(y, self.coarse)
            if self.fine_block is not None:
                parts = [y] + [proj(F.adaptive_avg_pool2d(feats[n].float(), self.coarse)) for n, proj in zip(self.fine_names, self.fine)]
                y = self.fine_block(torch.cat(parts, dim=1))
        else:
            if image is None:
                raise RuntimeError("the vector-mode generator needs the (normalised) image")
            v = feats[plan["vector"]["name"]].float()
            g = self.vec(self.filter(v, cls))
            e = self._fit(self.encoder(image.float()), self.coarse)
            y = self.merge(torch.cat([e, g[:, :, None, None].expand(-1, -1, *self.coarse)], dim=1))
        return self.head(y)


def init_generator(gen: nn.Module, seed: int) -> nn.Module:
    """Deterministic initialisation from ``seed`` (no global RNG): Kaiming for convolutions and
    linear layers, N(0, 1/C) for the class embedding, BN at (1, 0)."""
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for m in gen.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=g)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
            elif isinstance(m, FeatureFilter):
                c = m.embedding.shape[1]
                m.embedding.copy_(torch.randn(m.embedding.shape, generator=g) / math.sqrt(c))
    return gen


def generator_image(clf: Classifier, x01: torch.Tensor) -> torch.Tensor:
    """What the vector-mode generator's own encoder sees: the classifier's normalised input."""
    return clf.normalize(x01)


def generator_z(gen: MaskGenerator, clf: Classifier, x01: torch.Tensor, cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z, logits)``: the instance-normalised generator output (B, 1, h, w) and the classifier's logits."""
    with torch.no_grad():
        feats, logits = capture(clf, x01, gen.plan)
        feats = {k: v.detach() for k, v in feats.items()}
    img = generator_image(clf, x01) if gen.plan["mode"] == "vector" else None
    return instance_normalise(gen(feats, cls, img)), logits


# ---------------------------------------------------------------------------------------------
# fitted generators: where they are, loading once per (path, device)


def fit_candidates(clf: Classifier, transformer: str) -> list[Path]:
    return fitted.candidates(clf.id, fit_filename(transformer))


@functools.lru_cache(maxsize=16)
def load_generator(path: str, device: str) -> tuple[MaskGenerator, dict]:
    """The fitted generator at ``path`` on ``device`` (eval mode; loaded once, never modified)."""
    tensors, card = fitted.load_fitted(path, device="cpu")
    gen = MaskGenerator(card["plan"])
    gen.load_state_dict(tensors)
    gen.to(device).eval()
    for p in gen.parameters():
        p.requires_grad_(False)
    return gen, card


def choose_generator(clf: Classifier, cfg: DControlConfig) -> Optional[tuple[MaskGenerator, dict, Path]]:
    """The fitted generator to use, or None when the per-image optimisation is to be used."""
    if cfg.generator == "optimise":
        return None
    paths = [Path(cfg.fit).expanduser()] if cfg.fit else fit_candidates(clf, cfg.transformer)
    if cfg.fit and not paths[0].exists():
        raise ExplainerError(f"dcontrol: fitted generator not found: {cfg.fit}")
    for p in paths:
        gen, card = load_generator(str(p.resolve()), str(clf.device))
        if card.get("model") not in (None, clf.id) and not cfg.fit:
            continue
        plan = card["plan"]
        if tuple(plan["input_size"]) != tuple(clf.input_size) or int(plan["num_classes"]) != clf.num_classes:
            if cfg.fit:
                raise ExplainerError(f"dcontrol: {p.name} was fitted for another input size or number of classes")
            continue
        return gen, card, p
    if cfg.generator == "fitted":
        raise ExplainerError(
            f"dcontrol: no fitted {cfg.transformer} generator for {clf.id}; fit one with "
            f"`python -m explainers fit --explainer dcontrol --model {clf.id} --data SOURCE --set transformer={cfg.transformer}`"
            " or use generator=optimise"
        )
    return None


# ---------------------------------------------------------------------------------------------
# per-image optimisation (no fitted generator)


def optimise_z(
    clf: Classifier,
    x01: torch.Tensor,
    target: int,
    cfg: DControlConfig,
    progress: Optional[Callable] = None,
) -> tuple[torch.Tensor, list[float]]:
    """A free coarse map ``P`` optimised for one image under the controller and Eq. 4's loss:
    ``min_P CE(f(φ(I, upsample(C(IN(P))), A)), c)`` averaged over ``backgrounds`` random A per step.
    Returns ``(z, loss history)``."""
    dev = clf.device
    gen = torch.Generator(device=dev).manual_seed(int(cfg.seed))
    ch, cw = coarse_size(clf.input_size)
    p = (0.01 * torch.randn(1, 1, ch, cw, generator=gen, device=dev)).requires_grad_(True)
    opt = torch.optim.Adam([p], lr=cfg.lr)
    n = cfg.backgrounds
    x = x01.expand(n, -1, -1, -1)
    tgt = torch.full((n,), int(target), device=dev, dtype=torch.long)
    losses: list[float] = []
    every = max(1, cfg.iterations // 50)
    report(progress, 0, cfg.iterations, "optimising the coarse map")
    for it in range(cfg.iterations):
        a = backgrounds(x, gen, cfg.p_blur, cfg.blur_sigma, cfg.noise_std, stratified=True)
        m = upsample(apply_controller(instance_normalise(p), cfg.transformer, cfg.eta, cfg.h), clf.input_size)
        loss = F.cross_entropy(clf.logits01(composite(x, m, a)).float(), tgt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if (it + 1) % every == 0 or it + 1 == cfg.iterations:
            report(progress, it + 1, cfg.iterations, f"loss {losses[-1]:.3f}")
    return instance_normalise(p.detach()), losses


# ---------------------------------------------------------------------------------------------
# fine-tuning (Section 3.3)


def _probs(clf: Classifier, xs: Callable[[int, int], torch.Tensor], n: int, target: int, batch_size: int) -> torch.Tensor:
    """Target probabilities of ``n`` images made in chunks by ``xs(lo, hi)``; halves the chunk on CUDA OOM."""
    def probs(lo: int, hi: int) -> torch.Tensor:
        with torch.no_grad():
            return torch.softmax(clf.logits01(xs(lo, hi)).float(), dim=1)[:, target]

    return torch.cat(map_chunks(n, batch_size, probs))


def ranking(r: torch.Tensor, tiebreak: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Pixel indices from the highest score to the lowest (flattened), ties broken by ``tiebreak``
    (higher first), then by position."""
    r = r.flatten()
    order = torch.arange(r.numel(), device=r.device)
    if tiebreak is not None:
        order = torch.sort(tiebreak.flatten(), descending=True, stable=True).indices
    return order[torch.sort(r[order], descending=True, stable=True).indices]


def finetune(
    clf: Classifier,
    x01: torch.Tensor,
    mask: torch.Tensor,
    target: int,
    samples: int = 64,
    reference: Optional[torch.Tensor] = None,
    tiebreak: Optional[torch.Tensor] = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Section 3.3: ``r'_i = r_i · (q_max − q_i)``, ``q`` made monotone, sampled and interpolated.

    ``mask`` (H, W) holds the scores r; ``q_i`` is the target's probability with only the top
    ``i`` pixels of ``x01`` (1, 3, H, W) kept and the others taken from ``reference`` (default: a
    blurred copy, σ = side/16). ``q`` is evaluated at ``samples`` + 1 evenly spaced counts
    ``i = 0 … N`` (N = H·W), made monotone with a running maximum, and interpolated linearly for
    every ``i``. Returns ``mask_finetuned`` (H, W), ``v`` (H, W) (each pixel's ``q_max − q_i``),
    and the curve (``counts``, ``q``, ``q_monotone``).
    """
    H, W = mask.shape[-2:]
    N = H * W
    dev = x01.device
    if reference is None:
        reference = _blur(x01, min(H, W) / 16.0)
    order = ranking(mask, tiebreak)
    rank = torch.empty(N, dtype=torch.long, device=dev)
    rank[order] = torch.arange(N, device=dev)
    counts = torch.unique(torch.linspace(0, N, int(samples) + 1, device=dev).round().long())
    rank_img = rank.view(1, 1, H, W)

    def make(lo: int, hi: int) -> torch.Tensor:
        keep = (rank_img < counts[lo:hi].view(-1, 1, 1, 1)).to(x01.dtype)
        return composite(x01, keep, reference)

    q = _probs(clf, make, counts.numel(), target, batch_size).double()
    q_mono = torch.cummax(q, dim=0).values
    v_s = (q_mono[-1] - q_mono).cpu().numpy()
    i = np.arange(1, N + 1, dtype=np.float64)  # the pixel of rank j (0-based) is kept once i = j + 1
    v_rank = np.interp(i, counts.cpu().numpy().astype(np.float64), v_s)
    v = torch.from_numpy(v_rank).to(dev, torch.float32)[rank].view(H, W)
    return {
        "mask_finetuned": mask.float() * v,
        "v": v,
        "counts": counts.cpu().numpy(),
        "q": q.cpu().numpy(),
        "q_monotone": q_mono.cpu().numpy(),
    }


# ---------------------------------------------------------------------------------------------
# the method


def fitted_mask(gen: MaskGenerator, clf: Classifier, x01: torch.Tensor, target: int, transformer: str, eta: float, h: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z, M)`` for one image from a fitted generator: Eq. 4 without the loss."""
    cls = torch.full((x01.shape[0],), int(target), device=x01.device, dtype=torch.long)
    with torch.no_grad():
        z, _ = generator_z(gen, clf, x01, cls)
        m = upsample(apply_controller(z, transformer, eta, h), clf.input_size)
    return z, m


def run(clf: Classifier, x01: torch.Tensor, target: int, config: DControlConfig, progress: Optional[Callable] = None) -> MethodOutput:
    """Maps ``mask`` (Eq. 4) and ``mask_finetuned`` (Section 3.3) for ``target``."""
    cfg = config
    chosen = choose_generator(clf, cfg)
    meta: dict[str, Any] = {"amortised": chosen is not None, "transformer": cfg.transformer, "eta": cfg.eta, "h": cfg.h}
    extras: dict[str, Any] = {}
    if chosen is not None:
        gen, card, path = chosen
        z, m = fitted_mask(gen, clf, x01, target, cfg.transformer, cfg.eta, cfg.h)
        tc = card.get("config", {})
        meta.update(
            generator=str(path),
            trained_transformer=tc.get("transformer"),
            trained_eta=tc.get("eta"),
            trained_h=tc.get("h"),
            trained_on=card.get("dataset"),
            fit_command=card.get("command"),
        )
    else:
        z, losses = optimise_z(clf, x01, target, cfg, progress)
        m = upsample(apply_controller(z, cfg.transformer, cfg.eta, cfg.h), clf.input_size)
        meta.update(generator="per-image optimisation", trained_transformer=cfg.transformer, trained_eta=cfg.eta, trained_h=cfg.h,
                    iterations=cfg.iterations, final_loss=losses[-1] if losses else None)
        extras["loss"] = np.asarray(losses, dtype=np.float32)
    report(progress, 0, 1, "fine-tuning")
    ref = _blur(x01, cfg.finetune_sigma if cfg.finetune_sigma is not None else min(clf.input_size) / 16.0)
    tiebreak = upsample(z, clf.input_size)[0, 0]
    ft = finetune(clf, x01, m[0, 0], target, cfg.finetune_samples, ref, tiebreak, cfg.batch_size)
    report(progress, 1, 1, "fine-tuned")
    extras.update(
        z=z[0, 0].cpu().numpy().astype(np.float32),
        v=ft["v"].cpu().numpy().astype(np.float32),
        finetune_fraction=(ft["counts"] / float(m.shape[-1] * m.shape[-2])).astype(np.float32),
        finetune_q=ft["q"].astype(np.float32),
        finetune_q_monotone=ft["q_monotone"].astype(np.float32),
    )
    meta.update(coarse_size=list(z.shape[-2:]), q_max=float(ft["q_monotone"][-1]), q_reference=float(ft["q"][0]))
    return MethodOutput(maps={"mask": m[0, 0], "mask_finetuned": ft["mask_finetuned"]}, extras=extras, meta=meta)


register(
    MethodSpec(
        name="dcontrol",
        title="Distribution controller (mask predictor)",
        config=DControlConfig,
        run=run,
        maps={"mask": "mask", "mask_finetuned": "mask"},
        units={"mask": "relevance", "mask_finetuned": "relevance × probability"},
        paper="003_b67efb941534cde0",
        needs_fit=True,
    )
)
