"""DSSR+: a fine-grained mask optimised per image, with SSR, SDR and DSSR as ablations
(paper 001, Section 3, Eq. 1–5; the settings of Section 4).

Reading of the paper, whose signs and use of m / 1 − m are loose (the issue asks for the reading
in which the highlighted region is the small region that alone keeps the class and whose deletion
destroys it). Here ``m`` is always that *highlighted* mask, 1 = explanation:

- Eq. 1: x_{r,m} = m·x + (1 − m)·r. The **preserved** image is x_{r,m} = m·x + (1 − m)·r (only the
  highlighted region is left, the rest is the reference r); the **deleted** image is
  x_{r,1−m} = (1 − m)·x + m·r (the highlighted region replaced by r). The paper's m in Eq. 3–5 is
  the *deletable* region, i.e. our 1 − m: its Eq. 4 minimises f(x_{r,m_paper}) (the image that
  keeps the deletable part) and maximises f(x_{r,1−m_paper}), and its Section 3.4 calls pixels
  with m_paper = 1 "masked pixels ... unimportant to the model output". Eq. 5 as printed swaps the
  two score terms against Eq. 4; read literally with either meaning of m it would make the mask
  highlight the background (or grow without bound), so we keep Eq. 4's orientation for both.
- Losses, minimised, with f = softmax probability of the target class c_T (Section 3.1):

      SSR   (Eq. 2):  λ‖m‖₁ − f(preserved)
      SDR   (Eq. 3):  λ‖m‖₁ + f(deleted)                      (= Eq. 3 with m_paper = 1 − m, + const)
      DSSR  (Eq. 4):  λ‖m‖₁ + f(deleted) − f(preserved)       (ditto)
      DSSR+ (Eq. 5):  λ·Σ maxpool(m | k1, s1, p1) + f(deleted(m̄)) − f(preserved(m̄)),
                      m̄ = avgpool(m | k2, s2, p2)

  The regulariser of Eq. 5, −λ‖1 − maxpool(1 − m_paper)‖₁, equals λ·Σ maxpool(m) − λ·(number of
  pooling windows) with m = 1 − m_paper; the constant is left out of the recorded loss (it would
  only jump when λ switches). ``paper_regulariser`` is the printed form; the tests check both.
  Its gradient reaches only the largest m (the paper's "smallest m_paper") in each k1×k1 window,
  so an isolated highlighted pixel, the maximum of many windows, is pushed out first: the mask
  shrinks onto compact regions.
- The auxiliary mask m̄ of Eq. 5 is what perturbs the image (both score terms); the regulariser
  acts on the optimised m. With the paper's p2 = 0 (and s2 = 1) average pooling shrinks the mask by
  k2 − 1, so m is optimised at ((H − 1)·s2 + k2 − 2·p2) × (...) and m̄ comes out at exactly H × W
  (no resizing, no invented padding). Padding, if asked for, is left out of the averages
  (``count_include_pad=False``), so avgpool(m) = 1 − avgpool(m_paper) still holds.
- Initialisation (Section 3.1, 3.3, 4): m_paper = 0 for SSR, DSSR and DSSR+, 1 for SDR; i.e.
  m = 0 for SSR and SDR (nothing highlighted yet) and m = 1 for DSSR and DSSR+ (everything
  highlighted; the regulariser then carves the mask down). ``init`` overrides it.
- m is optimised directly with Adam and clamped to [0, 1] after every step ("In practice, the value
  of m is clamped between 0 and 1", Section 2.3): no sigmoid, so m = 0 and m = 1 are reachable.
- Two-stage λ (Section 3.3, DSSR and DSSR+): the smaller λ·lam_small while the preserved image has
  lost the class, λ otherwise, so that f(preserved) stays near f(x) (the paper: "f(x_{r,1−m}) → 1").
  "Lost" is relative to the image: f(preserved) ≤ θ·f(x), f(x) the target's probability on the
  unperturbed image; an absolute θ = 0.5 never fired on confident classifiers (0 of 300 iterations
  on 10 shapes test images). The paper gives neither θ nor the smaller λ; ours are θ = 0.8 and
  lam_small = 0.1. Measured with ``scripts/dssr_table.py --constant`` (first 100 shapes test
  images, app defaults, λ = 10/(H·W)) on shapes-resnet: the preserved image loses the class on 10%
  of the images, first around iteration 11; the schedule then cuts its time lost from 12.2 to 4.6
  iterations and keeps f(preserved) > 0.8·f(x) at the end on 98% of images against 96% for a
  constant λ, with the same pointing (0.83) and a mask 1.4% larger (0.0441 vs 0.0435): a safety
  net, small at the paper's λ, because a constant λ rarely loses the class there. Its effect grows
  with λ: at 30/(H·W) (blur reference, first 60 images) θ = 0.5 keeps the top-1 class on 97%
  against 75% for a constant λ. θ = 0.9 fires on about half the images and keeps f(preserved) >
  0.9·f(x) on 90% / 100% (shapes-resnet / shapes-vgg) against 71% / 84% (masks 0.047 / 0.034 vs
  0.044 / 0.034; a constant λ of 7/(H·W) needs a larger mask, 0.050 / 0.039, for 83% / 95%), but
  costs shapes-resnet's pointing (0.76 against 0.83), so it is not the default. SSR and SDR use a
  constant λ, as in the paper.
- λ: the paper uses 10/224² for DSSR(+) and 1/224² for SSR/SDR (Fig. 2), i.e. 10/(H·W) and
  1/(H·W) on an H×W input (the same weight per pixel relative to one probability). Pool sizes
  scale with the side: k = round(k_paper · √(H·W)/224), p1 = k1 // 2 (the paper's p1 = k1/2),
  s1 = s2 = 1 and p2 = 0 as in the paper. The resolved values are in ``meta["resolved"]``.
- The reference r (Eq. 1): ``auto`` (the default) takes blur when the classifier's blurred probe
  images keep none of their own class (at most 5% of it: the photograph networks), else, among
  uniform noise, blur and the mean colour, the one the classifier reads as the least class evidence
  (predictions closest to uniform on its probe images; ``references.auto_reference``, chosen once
  per classifier). Against the mean colour EfficientNet-Lite0's DSSR+ mask settled on faint
  cut-outs that are sufficient on a flat field but whose blur does not remove the class (issue 24;
  the numbers are in ``auto_reference``). The
  paper's uniform noise stays available as ``noise``, but a reference that itself reads as a
  class breaks the preservation / deletion game: shapes-resnet calls U(0, 1) noise a star or a
  cross (p ≈ 0.9), so a star's preserved image keeps the class with almost no mask, and the mask
  has nothing to find. Noise is drawn with a CPU generator seeded from ``seed`` (the same noise
  on every device).

Both perturbed images go through the classifier as one batch of two per iteration (for SSR and SDR
too: the page plots both scores). Gradients are taken w.r.t. m only; the model is never changed.
Same seed, same device and build: the same mask bit for bit. The optimisation amplifies rounding,
though (Adam's steps barely depend on the gradient's size, and m sits on the clamp bounds): a
reordered but equal Eq. 1 or a fused Adam (both used here, for speed: :func:`eq1_pair`, :func:`_adam`)
moves single mask values by up to 0.4 after 60 iterations on the shapes images, so CPU and GPU masks
agree in shape, not in every pixel.

Map: ``mask`` = m̄ (the mask the classifier saw), in [0, 1], at the input size; 1 = highlighted.
Extras: per-iteration ``loss``, ``preserved_score``, ``deleted_score``, ``lam`` (float32 arrays),
the final ``preserved_image`` / ``deleted_image`` (uint8 H×W×3), ``mask_param`` (the optimised m,
larger than the image for DSSR+) and ``probabilities`` (original / preserved / deleted).
Meta: ``reference`` (the kind used, and for ``auto`` the candidates' class evidence), ``threshold``
(θ·f(x)), ``lost_iterations`` (f(preserved) ≤ θ·f(x)), ``small_lambda_iterations`` and
``first_small_lambda`` (the iterations that used the small λ: the lost ones, for DSSR(+) with
lam_small < 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..classifiers.base import Classifier
from ..config import knob
from ..core import MethodOutput, MethodSpec, register
from ..errors import ExplainerError
from ..progress import report
from .references import auto_reference, reference

VARIANTS = ("dssr+", "dssr", "ssr", "sdr")
REFERENCES = ("auto", "noise", "blur", "mean", "constant")
PAPER_SIDE = 224  # the paper's settings (Section 4) are for 224×224 inputs
PAPER = {"k1": 12, "s1": 1, "p1": 6, "k2": 16, "s2": 1, "p2": 0}
THETA, LAM_SMALL = 0.8, 0.1  # the two-stage λ's defaults (ours; the paper gives none; see the module docstring)


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ExplainerError(f"dssr: {msg}")


@dataclass(frozen=True)
class DSSRConfig:
    """DSSR+ knobs (paper 001, Section 3–4); each field's help gives the paper's symbol and value.

    ``None`` (shown as auto) = the paper's value scaled to the input size (:meth:`resolve`). The
    two-stage λ (Section 3.3, DSSR and DSSR+ only) uses λ·lam_small while f(preserved) ≤ θ·f(x) and
    λ otherwise; the paper gives neither θ nor the smaller λ, so those defaults are ours (see the
    module docstring).
    """

    variant: str = knob("dssr+", "dssr+ (Eq. 5, default); the ablations of Fig. 2–3: dssr (Eq. 4), ssr (Eq. 2), "
                        "sdr (Eq. 3)", choices=VARIANTS)
    reference: str = knob("auto", "the reference r of Eq. 1: auto (default: blur when a blurred image keeps none of "
                          "its class for this classifier, else of noise, blur and mean the one it reads as the least "
                          "class evidence), noise (U(0, 1), the paper's), blur, mean "
                          "(the image's mean colour) or constant (grey value)", choices=REFERENCES, symbol="r")
    value: float = knob(0.5, "grey level of the constant reference, in [0, 1] (default 0.5)", min=0.0, max=1.0,
                        step=0.05)
    lam: Optional[float] = knob(None, "sparsity weight λ; auto = 10/(H·W) for DSSR(+), 1/(H·W) for SSR/SDR "
                                "(the paper's 10/224², 1/224²)", min=0.0, symbol="λ", auto="auto")
    theta: float = knob(THETA, f"two-stage λ: the small λ while f(preserved) ≤ θ·f(x), f(x) the target's probability "
                        f"on the image (Section 3.3; not given by the paper, ours {THETA})", min=0.0, max=1.0, step=0.05,
                        symbol="θ", advanced=True)
    lam_small: float = knob(LAM_SMALL, f"the smaller λ of the two-stage schedule, as a fraction of λ (not given by "
                            f"the paper, ours {LAM_SMALL}; 1 = a constant λ)", min=0.0, max=1.0, step=0.05, advanced=True)
    iterations: int = knob(300, "Adam iterations (Section 4.1: 300)", min=1, max=2000, step=10)
    lr: float = knob(0.1, "Adam's learning rate (Section 4.1: 0.1)", min=0.001, max=1.0, step=0.001, advanced=True)
    k1: Optional[int] = knob(None, "max-pool window k1 of the regulariser; auto = the paper's 12 at 224, scaled",
                             min=1, symbol="k1", auto="auto", advanced=True)
    s1: Optional[int] = knob(None, "max-pool stride s1; auto = the paper's 1", min=1, symbol="s1", auto="auto",
                             advanced=True)
    p1: Optional[int] = knob(None, "max-pool padding p1; auto = k1 // 2 (the paper's 6 at 224)", min=0, symbol="p1",
                             auto="auto", advanced=True)
    k2: Optional[int] = knob(None, "average-pool window k2 of the auxiliary mask m̄; auto = the paper's 16 at 224, "
                             "scaled", min=1, symbol="k2", auto="auto", advanced=True)
    s2: Optional[int] = knob(None, "average-pool stride s2; auto = the paper's 1", min=1, symbol="s2", auto="auto",
                             advanced=True)
    p2: Optional[int] = knob(None, "average-pool padding p2; auto = the paper's 0", min=0, symbol="p2", auto="auto",
                             advanced=True)
    init: Optional[float] = knob(None, "initial mask m (1 = highlighted); auto = the paper's, 1 for DSSR(+), 0 for "
                                 "SSR/SDR", min=0.0, max=1.0, auto="auto", advanced=True)
    early_stop: float = knob(0.0, "stop when the mean loss over the last patience iterations moved by less than this "
                             "(0 = off, the default)", min=0.0, advanced=True)
    patience: int = knob(20, "iterations per window of the early stop (default 20)", min=1, step=1, advanced=True)
    seed: int = knob(0, "seeds the reference noise (default 0)", min=0, step=1)

    def __post_init__(self):
        _check(self.variant in VARIANTS, f"variant must be one of {', '.join(VARIANTS)}, not {self.variant!r}")
        _check(self.reference in REFERENCES, f"reference must be one of {', '.join(REFERENCES)}, not {self.reference!r}")
        _check(0.0 <= self.value <= 1.0, "value (the constant reference's grey) must be in [0, 1]")
        _check(self.lam is None or (math.isfinite(self.lam) and self.lam >= 0), "lam must be a number >= 0")
        _check(0.0 <= self.theta <= 1.0, "theta must be in [0, 1]")
        _check(0.0 <= self.lam_small <= 1.0, "lam_small must be in [0, 1]")
        _check(isinstance(self.iterations, int) and self.iterations >= 1, "iterations must be at least 1")
        _check(math.isfinite(self.lr) and self.lr > 0, "lr must be positive")
        for name in ("k1", "s1", "k2", "s2"):
            v = getattr(self, name)
            _check(v is None or (isinstance(v, int) and v >= 1), f"{name} must be an integer >= 1")
        for name in ("p1", "p2"):
            v = getattr(self, name)
            _check(v is None or (isinstance(v, int) and v >= 0), f"{name} must be an integer >= 0")
        _check(self.init is None or 0.0 <= self.init <= 1.0, "init must be in [0, 1]")
        _check(math.isfinite(self.early_stop) and self.early_stop >= 0, "early_stop must be >= 0 (0 = off)")
        _check(isinstance(self.patience, int) and self.patience >= 1, "patience must be at least 1")

    def resolve(self, h: int, w: int) -> dict:
        """The paper's 224×224 settings scaled to an h×w input (pool sizes by side, λ by area),
        overridden by the fields that are set; raises ExplainerError on an impossible combination."""
        scale = math.sqrt(h * w) / PAPER_SIDE
        k1 = self.k1 if self.k1 is not None else max(1, round(PAPER["k1"] * scale))
        k2 = self.k2 if self.k2 is not None else max(1, round(PAPER["k2"] * scale))
        p1 = self.p1 if self.p1 is not None else k1 // 2  # the paper's p1 = k1 / 2
        s1 = self.s1 if self.s1 is not None else PAPER["s1"]
        s2 = self.s2 if self.s2 is not None else PAPER["s2"]
        p2 = self.p2 if self.p2 is not None else PAPER["p2"]
        _check(2 * p1 <= k1 and 2 * p2 <= k2, f"padding must be at most half the window (k1={k1}, p1={p1}, k2={k2}, p2={p2})")
        plus = self.variant == "dssr+"
        # DSSR+: m is larger than the image so that avgpool(m | k2, s2, p2) is exactly h × w
        mh, mw = ((h - 1) * s2 + k2 - 2 * p2, (w - 1) * s2 + k2 - 2 * p2) if plus else (h, w)
        # a window larger than what it pools is meaningless (with the default p1 = k1 // 2 a
        # bound on the *padded* mask would never bite, so the bound is on the mask itself)
        _check(k1 <= min(mh, mw), f"k1={k1} is larger than the mask {mh}x{mw}")
        _check(not plus or k2 <= min(h, w), f"k2={k2} is larger than the image {h}x{w}")
        base = 10.0 if self.variant in ("dssr+", "dssr") else 1.0  # Fig. 2: 10/k² for DSSR, 1/k² for SSR/SDR
        lam = self.lam if self.lam is not None else base / (h * w)
        two_stage = self.variant in ("dssr+", "dssr")
        init = self.init if self.init is not None else (1.0 if two_stage else 0.0)
        return {
            "lam": lam, "lam_small": lam * self.lam_small if two_stage else lam, "two_stage": two_stage,
            "k1": k1, "s1": s1, "p1": p1, "k2": k2, "s2": s2, "p2": p2,
            "mask_size": [mh, mw], "init": init, "scale": round(scale, 4),
        }


# --------------------------------------------------------------------------------- the equations
def perturb(x01: torch.Tensor, r: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Eq. 1: x_{r,m} = m·x + (1 − m)·r (broadcast over channels)."""
    return m * x01 + (1 - m) * r


def eq1_pair(x01: torch.Tensor, r: torch.Tensor):
    """Eq. 1 for both images at once: returns ``m -> (x_{r,m}, x_{r,1−m})`` as a (2, C, H, W) batch,
    for x01 and r (1, C, H, W) and m (1, 1, H, W).

    Written as (r, x) + m·(x − r, r − x): one fused multiply-add per iteration on constants made
    once, the same images as :func:`perturb` up to float rounding (tested), one autograd node where
    the literal form takes ten. On a small classifier the mask's side of an iteration is mostly
    per-op overhead, and that is what the speed target (an iteration within 1.2× a bare forward +
    backward) is about."""
    base = torch.cat([r, x01])  # each image where m = 0: the reference, then the original
    step = torch.cat([x01 - r, r - x01])
    return lambda m: torch.addcmul(base, m, step)


def perturb_pair(x01: torch.Tensor, r: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """(preserved, deleted) = (x_{r,m}, x_{r,1−m}) in one batch (see :func:`eq1_pair`)."""
    return eq1_pair(x01, r)(m)


def paper_regulariser(m_paper: torch.Tensor, k: int, s: int, p: int) -> torch.Tensor:
    """Eq. 5's ‖1 − maxpool(1 − m_paper | k, s, p)‖₁ for m_paper (…, H, W) in [0, 1] (the entries are
    ≥ 0, so the L1 norm is their sum; no abs(), whose gradient would vanish exactly where a window
    holds a highlighted pixel). Padding never wins a max."""
    return (1 - F.max_pool2d(1 - m_paper, k, s, p)).sum()


def regulariser(m: torch.Tensor, k: int, s: int, p: int) -> torch.Tensor:
    """The same in our orientation (m = 1 − m_paper): Σ maxpool(m) = #windows − paper_regulariser."""
    return F.max_pool2d(m, k, s, p).sum()


def auxiliary_mask(m: torch.Tensor, k: int, s: int, p: int) -> torch.Tensor:
    """Eq. 5's m̄ = avgpool(m | k, s, p) (padding, if any, left out of the averages)."""
    if k == 1 and s == 1 and p == 0:
        return m
    return F.avg_pool2d(m, k, s, p, count_include_pad=False)


DATA_WEIGHTS = {"ssr": (-1.0, 0.0), "sdr": (0.0, 1.0), "dssr": (-1.0, 1.0), "dssr+": (-1.0, 1.0)}


def data_term(variant: str, f_preserved: torch.Tensor, f_deleted: torch.Tensor) -> torch.Tensor:
    """The score part of Eq. 2–5 (to be minimised): −f(preserved) for SSR, f(deleted) for SDR, and
    f(deleted) − f(preserved) for DSSR and DSSR+."""
    wp, wd = DATA_WEIGHTS[variant]
    return wp * f_preserved + wd * f_deleted


def _uint8(img: torch.Tensor) -> np.ndarray:
    return (img.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


# ----------------------------------------------------------------------------------------- run
def _adam(m: torch.Tensor, lr: float) -> torch.optim.Optimizer:
    """Adam (Section 4.1), fused into one kernel where the device has one (CPU, CUDA): the same
    update as the default loop up to float rounding, at a third of its per-step overhead."""
    try:
        return torch.optim.Adam([m], lr=lr, fused=True)
    except (RuntimeError, ValueError):  # a device without the fused kernel
        return torch.optim.Adam([m], lr=lr)


def run(clf: Classifier, x01: torch.Tensor, target: int, cfg: DSSRConfig, progress=None) -> MethodOutput:
    h, w = clf.input_size
    rs = cfg.resolve(h, w)
    dev = x01.device
    x = x01.detach()
    ref_meta = auto_reference(clf) if cfg.reference == "auto" else {"kind": cfg.reference}
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    r = reference(ref_meta["kind"], x.cpu(), gen, value=cfg.value).to(dev)
    with torch.no_grad():
        pf0 = torch.softmax(clf.logits01(x), dim=1)[0, target]
    plus = cfg.variant == "dssr+"
    k1, s1, p1, k2, s2, p2 = (rs[k] for k in ("k1", "s1", "p1", "k2", "s2", "p2"))
    mh, mw = rs["mask_size"]

    def effective(m: torch.Tensor) -> torch.Tensor:
        return auxiliary_mask(m, k2, s2, p2) if plus else m

    m = torch.full((1, 1, mh, mw), float(rs["init"]), device=dev, dtype=x.dtype, requires_grad=True)
    opt = _adam(m, cfg.lr)
    lam_hi = torch.tensor(rs["lam"], device=dev, dtype=x.dtype)
    lam_lo = torch.tensor(rs["lam_small"], device=dev, dtype=x.dtype)
    theta = (cfg.theta * pf0).to(x.dtype)  # relative to the image: "the class is lost"
    pair_of = eq1_pair(x, r)
    # data_term as one dot product with the softmax of the pair: weights at the target's column
    weights = torch.zeros(2, clf.num_classes, device=dev, dtype=x.dtype)
    weights[:, target] = torch.tensor(DATA_WEIGHTS[cfg.variant], dtype=x.dtype)
    weights = weights.view(-1)
    # the history stays on the device as detached values (no host sync, no copy per iteration)
    losses, scores, lams = [], [], []
    every = max(1, cfg.iterations // 100)
    done = 0
    for it in range(cfg.iterations):
        mb = effective(m)
        probs = torch.softmax(clf.logits01(pair_of(mb)), dim=1)  # (preserved, deleted): one batch
        fd = probs.detach()[:, target]
        lam = torch.where(fd[0] <= theta, lam_lo, lam_hi)  # two-stage λ (Section 3.3): small while lost
        reg = regulariser(m, k1, s1, p1) if plus else m.sum()  # m ≥ 0: ‖m‖₁ = Σ m
        loss = torch.dot(probs.view(-1), weights) + lam * reg  # = data_term(variant, f_p, f_d) + λ·reg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            m.clamp_(0.0, 1.0)
        losses.append(loss.detach())
        scores.append(fd)
        lams.append(lam)
        done = it + 1
        if done % every == 0 or done == cfg.iterations:
            part = None  # anytime: the mask so far, every tenth report (a tenth of a long run; one host copy)
            if done % (10 * every) == 0 and done < cfg.iterations and progress is not None:
                with torch.no_grad():
                    part = {"mask": effective(m).detach()[0, 0].float().cpu().numpy()}
            report(progress, done, cfg.iterations, cfg.variant.upper(), partial=part)
        if cfg.early_stop > 0 and done % cfg.patience == 0 and done >= 2 * cfg.patience:
            recent = torch.stack(losses[-2 * cfg.patience:])
            last, before = recent[cfg.patience:].mean(), recent[: cfg.patience].mean()
            if float((last - before).abs()) < cfg.early_stop:
                report(progress, cfg.iterations, cfg.iterations, f"{cfg.variant.upper()}: settled")
                break
    hist = torch.cat([torch.stack(losses)[:, None], torch.stack(scores), torch.stack(lams)[:, None]], dim=1).float()
    with torch.no_grad():
        mb = effective(m)
        pair = pair_of(mb)
        pf = torch.softmax(clf.logits01(pair), dim=1)[:, target].float().cpu()
        pf0 = pf0.float().cpu()
        hist = hist.cpu().numpy()
    lost = hist[:, 1] <= float(theta)  # the preserved image had lost the class (before the step)
    small = lost if rs["two_stage"] and rs["lam_small"] < rs["lam"] else np.zeros(len(hist), dtype=bool)
    return MethodOutput(
        {"mask": mb.detach()[0, 0].float()},
        extras={
            "loss": hist[:, 0], "preserved_score": hist[:, 1], "deleted_score": hist[:, 2], "lam": hist[:, 3],
            "preserved_image": _uint8(pair[0]), "deleted_image": _uint8(pair[1]),
            "mask_param": m.detach()[0, 0].float().cpu().numpy(),
            "probabilities": {"original": float(pf0), "preserved": float(pf[0]), "deleted": float(pf[1])},
        },
        meta={
            "resolved": rs, "iterations_run": done, "reference": ref_meta,
            "threshold": float(theta), "lost_iterations": int(lost.sum()), "small_lambda_iterations": int(small.sum()),
            "first_small_lambda": int(np.argmax(small)) if small.any() else None,
            "final": {"preserved": float(pf[0]), "deleted": float(pf[1]),
                      "mask_mean": float(mb.detach().mean()), "loss": float(hist[-1, 0])},
        },
    )


register(MethodSpec("dssr", "DSSR+", DSSRConfig, run, {"mask": "mask"}, {"mask": "mask value"}, paper="001_0118de9508c317d1"))
