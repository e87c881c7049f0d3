"""VarSal: variational saliency maps (paper 002, Section 3, Section 4.1, Appendix C and D).

The saliency map is a random variable ``s`` (h x w) with posterior
``p(s | x, y) ∝ p(y | x, s) p(s)`` (Eq. 1), approximated by a factorised Gaussian
``q(s | x) = N(vec s; μ(x), diag ν(x))`` (Section 3.3). Maximising the ELBO means minimising (Eq. 5)

    L = E_q E_k [ KL( p_M(x) || p_M(x ⊙ τ_k(s) + x̄ ⊙ (1 − τ_k(s))) ) ]  +  β KL( q || N(0, K_h ⊗ K_w) )
            (*) likelihood, Eq. 2–3                                          (**) soft-TV prior, Eq. 4, 6, 7

- τ_k is the top-k mask, made differentiable with the SOFT operator (``soft_topk.py``);
  k ~ U(hw/10, 9hw/10) (Section 4.1); x̄ is a baseline: blurred, noise or mean (notes 1–3), one
  drawn at random (per sample: the paper draws one per training iteration; per sample has the same
  expectation and lower variance).
- The prior KL is the closed form of Appendix D through the Kronecker factors (``softtv.py``),
  weighted by β = 1/(10hw) (Section 4.1).
- ``s = μ + √ν ⊙ z`` (reparameterisation); gradients reach μ and ν through the soft top-k mask and
  the classifier, which stays frozen.

Two ways to get (μ, ν) for an image:

- amortised: the encoder of Appendix C (``Encoder``), fitted per classifier by
  ``python -m explainers fit --explainer varsal --model ID --data SOURCE`` — explaining is then one
  forward pass (the paper's point);
- per-image: with no fitted encoder (e.g. a torchvision model), or when α, β or the baseline differ
  from the ones the encoder was trained with, μ and log ν are free parameters optimised with the
  same objective for this one image. ``meta["amortised"]`` says which was used and why.

Maps (raw, at the classifier's input size): ``mean`` = μ and ``std`` = √ν, both in units of the
prior's standard deviation (the soft-TV prior has unit marginal variance). Larger μ = kept earlier
by the top-k = more important. Only the *order* of the saliency values matters to the likelihood;
the prior fixes their scale around 0.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..classifiers.base import Classifier
from ..batching import with_oom_backoff
from ..core import MethodOutput, MethodSpec, register
from .. import fitted
from ..errors import ExplainerError
from ..progress import report
from . import references, softtv
from .soft_topk import soft_topk

BASELINES = ("blur", "noise", "mean")
FIT_NAME = "varsal"


# ---------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class VarSalConfig:
    """VarSal's knobs. Defaults are the paper's where it gives them (Section 4.1, Appendix C).

    - ``mode``: ``auto`` (the fitted encoder when there is one and α, β and the baseline are the
      ones it was trained with, else per-image), ``amortised`` (error without an encoder),
      ``per-image``.
    - ``alpha`` = 0.4: soft-TV prior correlation (Eq. 4, 6); 0 = standard Gaussian prior; < 0.5.
    - ``beta`` = None: weight of the prior KL; None means 1/(10·h·w) (Section 4.1).
    - ``baseline`` = ``random``: x̄ of Eq. 2 — one of blur / noise / mean drawn at random per
      sample (Section 4.1), or one of them always.
    - ``k_min`` = 0.1, ``k_max`` = 0.9: k ~ U(k_min·hw, k_max·hw) (Section 4.1).
    - ``topk_eps`` = 0.05: entropy weight of the SOFT top-k, relative to each map's score range.
    - ``sinkhorn_iters`` = 200: at most this many Sinkhorn iterations (stops at tol 1e-4).
    - ``blur_sigma`` = None: the blurred baseline's Gaussian σ in pixels (None: 1/16 of the side).
    - ``noise_std`` = 0.1: s.d. of the Gaussian noise of the noise and mean baselines (notes 2, 3;
      the paper gives no scale, see :func:`baselines`).
    - per-image only: ``steps`` = 150 Adam steps on μ and log ν, learning rate ``lr`` = 0.1
      decayed to 0 on a cosine (our choice: the paper has no per-image mode),
      ``n_mc`` = 8 samples (z, k, baseline) per step, forwarded ``batch_size`` = 8 at a time;
      the map is optimised on a grid of at most ``grid`` = 32 cells a side and upsampled
      bilinearly (64x64 inputs: 2x2-pixel cells, like the committed encoders; 28x28: full
      resolution; 224x224: 7x7-pixel cells). Free per-pixel parameters at 64x64 came out as
      salt-and-pepper noise in the time budget (each pixel's gradient is as noisy as a vanilla
      gradient map); 32 cells: the maximum on the object for 67% of 12 test images vs 58% at 16.
    - ``n_samples`` = 4: posterior samples returned in ``extras["samples"]`` (Fig. 6).
    - ``seed`` = 0: every random draw comes from a generator seeded with it.
    - ``encoder`` = None: path to fitted weights; None = the committed fit for the classifier
      (``assets/explainers/<id>/varsal.safetensors``) or the user's (``$EXPLAINERS_HOME``).
    """

    mode: str = field(default="auto", metadata={"choices": ("auto", "amortised", "per-image"), "help": "amortised encoder, per-image optimisation, or auto"})
    alpha: float = field(default=0.4, metadata={"help": "soft-TV prior correlation between neighbours (0 = N(0, I)); < 0.5"})
    beta: Optional[float] = field(default=None, metadata={"help": "prior KL weight; empty = 1/(10·h·w)"})
    baseline: str = field(default="random", metadata={"choices": ("random",) + BASELINES, "help": "what replaces the pixels outside the top-k"})
    k_min: float = 0.1
    k_max: float = 0.9
    topk_eps: float = 0.05
    sinkhorn_iters: int = 200
    blur_sigma: Optional[float] = None
    noise_std: float = 0.1
    steps: int = 150
    lr: float = 0.1
    n_mc: int = 8
    batch_size: int = 8
    grid: int = 32
    n_samples: int = 4
    seed: int = 0
    encoder: Optional[str] = None

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "amortised", "per-image"):
            raise ExplainerError(f"mode must be auto, amortised or per-image, got {self.mode!r}")
        softtv.check_alpha(self.alpha)
        if self.beta is not None and not (self.beta >= 0 and math.isfinite(self.beta)):
            raise ExplainerError(f"beta must be a non-negative number (or None for 1/(10hw)), got {self.beta}")
        if self.baseline not in ("random",) + BASELINES:
            raise ExplainerError(f"baseline must be random, {', '.join(BASELINES)}; got {self.baseline!r}")
        if not (0.0 < self.k_min <= self.k_max < 1.0):
            raise ExplainerError(f"need 0 < k_min <= k_max < 1, got k_min={self.k_min}, k_max={self.k_max}")
        if not self.topk_eps > 0:
            raise ExplainerError(f"topk_eps must be positive, got {self.topk_eps}")
        for name in ("sinkhorn_iters", "steps", "n_mc", "batch_size", "grid"):
            if int(getattr(self, name)) < 1:
                raise ExplainerError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.grid < 2:
            raise ExplainerError("grid must be at least 2")
        if not (self.lr > 0):
            raise ExplainerError(f"lr must be positive, got {self.lr}")
        if self.n_samples < 0:
            raise ExplainerError(f"n_samples must be >= 0, got {self.n_samples}")
        if self.blur_sigma is not None and not self.blur_sigma > 0:
            raise ExplainerError(f"blur_sigma must be positive, got {self.blur_sigma}")
        if not self.noise_std >= 0:
            raise ExplainerError(f"noise_std must be >= 0, got {self.noise_std}")

    def beta_for(self, h: int, w: int) -> float:
        return 1.0 / (10.0 * h * w) if self.beta is None else float(self.beta)


# ---------------------------------------------------------------------------------------------
# the encoder (Appendix C)

PAPER_CHANNELS = (64, 64, 64, 64, 32, 32, 32, 32, 32, 16, 16, 16, 16, 16, 16, 2)


@dataclass(frozen=True)
class EncoderConfig:
    """Appendix C's encoder: 3x3 convolutions (stride 1, padding 1, no pooling, so the map has the
    input's size), each followed by batch norm and ReLU, with output channels ``channels``; the last
    gives μ and η = log ν.

    Reading of the paper: Appendix C says "17 convolution layers" but lists 16 channel counts, and
    Section 4.1 says 16 layers; we build the 16 listed. The last layer has no BN/ReLU (μ is signed and
    log ν is any real number, so a ReLU there cannot be meant). ``width`` scales every hidden
    channel count (not the final 2) so the encoder fits a 2-core CPU's budget (see the fitted card).
    ``stride`` = 1 is the paper (map at the input's resolution); ``stride`` = 2 makes the first
    convolution stride 2, so the map comes out at half resolution and is upsampled bilinearly —
    see ``explainers/training/varsal.py`` for why the committed fits use it.
    """

    channels: tuple[int, ...] = PAPER_CHANNELS
    width: float = 1.0
    in_channels: int = 3
    stride: int = 1

    def __post_init__(self) -> None:
        if len(self.channels) < 2 or self.channels[-1] != 2:
            raise ExplainerError("encoder channels must end with 2 (μ and log ν)")
        if not self.width > 0:
            raise ExplainerError("encoder width must be positive")
        if int(self.stride) not in (1, 2, 4):
            raise ExplainerError("encoder stride must be 1, 2 or 4")

    def hidden(self) -> list[int]:
        return [max(1, int(round(c * self.width))) for c in self.channels[:-1]]


class Encoder(nn.Module):
    """x01 (B, 3, H, W) in [0, 1] -> (μ, log ν), each (B, H/stride, W/stride) (rounded up)."""

    LOG_NU_RANGE = (-12.0, 6.0)  # clamp for numerical safety only (ν from 6e-6 to 400)

    def __init__(self, cfg: EncoderConfig = EncoderConfig()):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        c = cfg.in_channels
        for i, co in enumerate(cfg.hidden()):
            stride = int(cfg.stride) if i == 0 else 1
            layers += [nn.Conv2d(c, co, 3, stride, 1, bias=False), nn.BatchNorm2d(co), nn.ReLU(inplace=True)]
            c = co
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(c, 2, 3, 1, 1)
        # start near the prior: μ ≈ 0, ν ≈ the prior's best mean-field variance (≈ 0.36 for α = 0.4)
        with torch.no_grad():
            self.head.weight.mul_(0.1)
            self.head.bias.copy_(torch.tensor([0.0, math.log(0.36)]))

    def forward(self, x01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(self.body((x01 - 0.5) / 0.25))
        return out[:, 0], out[:, 1].clamp(*self.LOG_NU_RANGE)


# ---------------------------------------------------------------------------------------------
# the objective (Eq. 2, 3, 5, 7)


def baselines(
    x01: torch.Tensor,
    kinds: torch.Tensor,
    gen: torch.Generator,
    blur_sigma: Optional[float],
    noise_std: float,
    blurred: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """x̄ for each row of ``x01`` (B, 3, H, W); ``kinds`` (B,) indexes ``BASELINES`` (notes 1–3).

    - blur: the shared Gaussian blur reference (σ = ``blur_sigma``, default 1/16 of the side);
    - noise: Gaussian noise, grey 0.5 plus N(0, ``noise_std``²) per pixel and channel, clipped to
      [0, 1] (the shared ``constant`` reference plus noise);
    - mean: the image's per-channel mean (shared ``mean`` reference) plus the same Gaussian noise.

    Reading of note 2 ("Gaussian noise", no scale given): the project's shared ``noise`` reference
    (uniform U(0, 1), full contrast) breaks the embedded classifiers even when the whole object is
    kept — on 60 shapes test images KL(p(x) || p(x̃)) ≈ 12 nats with the object kept vs 0.1 for
    blur — so it would swamp the likelihood with a term no saliency map can lower. With
    σ = 0.1 keeping the object brings the KL to ≈ 0.3 nats (0.13 for the mean baseline), i.e.
    the baseline removes information without being an out-of-distribution shock.

    Every random draw happens here for every row, whatever its kind, so results do not depend on
    how rows are later split into batches. ``blurred`` (broadcastable to ``x01``) skips the blur
    when the caller has it already (the per-image loop blurs its one image once).
    """
    gauss = torch.randn(x01.shape, generator=gen, device=gen.device, dtype=x01.dtype).to(x01.device)
    noise = (references.reference("constant", x01, value=0.5) + noise_std * gauss).clamp(0, 1)
    mean = (references.reference("mean", x01) + noise_std * gauss).clamp(0, 1)
    if blurred is None:
        blurred = references.reference("blur", x01, sigma=blur_sigma)
    k = kinds.view(-1, 1, 1, 1).to(x01.device)
    return torch.where(k == 0, blurred, torch.where(k == 1, noise, mean))


def draw_kinds(n: int, baseline: str, gen: torch.Generator) -> torch.Tensor:
    if baseline == "random":
        return torch.randint(0, len(BASELINES), (n,), generator=gen, device=gen.device).cpu()
    return torch.full((n,), BASELINES.index(baseline), dtype=torch.long)


def draw_k(n: int, cells: int, k_min: float, k_max: float, gen: torch.Generator) -> torch.Tensor:
    """k ~ U(k_min·hw, k_max·hw) (continuous; the soft top-k accepts fractional k)."""
    u = torch.rand(n, generator=gen, device=gen.device).cpu()
    return (k_min + (k_max - k_min) * u) * cells


def likelihood(
    clf: Classifier,
    x01: torch.Tensor,
    log_p: torch.Tensor,
    s: torch.Tensor,
    k: torch.Tensor,
    xbar: torch.Tensor,
    eps: float,
    iters: int,
) -> torch.Tensor:
    """−log p(y | x, s, k) + const = KL(p_M(x) || p_M(x ⊙ τ_k(s) + x̄ ⊙ (1 − τ_k(s)))) per row (Eq. 2).

    ``x01`` (B, 3, H, W), ``log_p`` (B, C) log-probabilities on the clean image, ``s`` (B, h, w)
    saliency samples (h, w may be coarser than H, W: the mask is then upsampled bilinearly),
    ``k`` (B,) how many of the h·w cells to keep, ``xbar`` (B, 3, H, W) baselines. In nats.
    """
    B, h, w = s.shape
    m = soft_topk(s.reshape(B, h * w), k.to(s.device, s.dtype), eps=eps, max_iter=iters).view(B, 1, h, w)
    if (h, w) != tuple(x01.shape[-2:]):
        m = F.interpolate(m, size=x01.shape[-2:], mode="bilinear", align_corners=False)
    xt = x01 * m + xbar * (1 - m)  # the perturbation of Fong & Vedaldi (Section 3.1)
    log_q = torch.log_softmax(clf.logits01(xt).float(), dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


# ---------------------------------------------------------------------------------------------
# loading a fitted encoder


def fitted_path(clf: Classifier) -> Optional[Path]:
    """The user's fit for ``clf`` if there is one, else the committed one, else None."""
    return fitted.find(clf.id, f"{FIT_NAME}.safetensors")


@functools.lru_cache(maxsize=16)
def _load_encoder(path: str, device: str) -> tuple[Encoder, dict]:
    tensors, card = fitted.load_fitted(path, device="cpu")
    ec = card["config"]["encoder"]
    enc = Encoder(EncoderConfig(channels=tuple(ec["channels"]), width=float(ec["width"]), in_channels=int(ec["in_channels"]), stride=int(ec.get("stride", 1))))
    enc.load_state_dict(tensors)
    enc.eval().to(device)
    for p in enc.parameters():
        p.requires_grad_(False)
    return enc, card


def load_encoder(path: str | Path, device: torch.device | str) -> tuple[Encoder, dict]:
    """A fitted encoder (eval mode, frozen) and its card, loaded once per (path, device); never mutate it."""
    p = Path(path).expanduser().resolve()
    if not p.exists() or not p.with_suffix(".json").exists():
        raise ExplainerError(f"no fitted VarSal encoder at {p} (needs the .safetensors and the .json beside it)")
    return _load_encoder(str(p), str(torch.device(device)))


# the config fields that define the objective: the encoder is only used when they all match its training
OBJECTIVE_FIELDS = ("alpha", "beta", "baseline", "k_min", "k_max", "topk_eps", "blur_sigma", "noise_std")


def _same_value(a, b) -> bool:
    if a is None or b is None or isinstance(a, str) or isinstance(b, str):
        return a == b
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)


def _choose(clf: Classifier, cfg: VarSalConfig) -> tuple[Optional[Path], str]:
    """(encoder path or None, one-line reason) for the mode the config asks for."""
    if cfg.mode == "per-image":
        return None, "per-image optimisation (asked for)"
    path = Path(cfg.encoder).expanduser() if cfg.encoder else fitted_path(clf)
    if path is None:
        if cfg.mode == "amortised":
            raise ExplainerError(
                f"no fitted VarSal encoder for {clf.id}; fit one with `python -m explainers fit --explainer varsal "
                f"--model {clf.id} --data SOURCE` or use mode=per-image"
            )
        return None, f"per-image optimisation (no fitted encoder for {clf.id})"
    _, card = load_encoder(path, clf.device)
    tc = card["config"]
    if card.get("model") not in (None, clf.id):
        raise ExplainerError(f"the VarSal encoder at {path} was fitted for {card.get('model')}, not {clf.id}")
    if tuple(card.get("input_size", clf.input_size)) != tuple(clf.input_size):
        raise ExplainerError(f"the VarSal encoder at {path} was fitted at {card.get('input_size')}, not {clf.input_size}")
    differs = [name for name in OBJECTIVE_FIELDS if not _same_value(getattr(cfg, name), tc.get(name))]
    if differs and cfg.mode == "auto":
        return None, f"per-image optimisation ({', '.join(differs)} differ from the encoder's training settings)"
    if differs:
        raise ExplainerError(
            f"the VarSal encoder was trained with " + ", ".join(f"{k}={tc.get(k)}" for k in differs)
            + f"; {', '.join(differs)} differ: use mode=per-image or mode=auto"
        )
    return path, "amortised encoder (one forward pass)"


# ---------------------------------------------------------------------------------------------
# per-image variational inference


def grid_size(input_size: tuple[int, int], grid: int) -> tuple[int, int]:
    """The per-image saliency grid: the input size, capped at ``grid`` cells on the longer side."""
    H, W = input_size
    s = min(1.0, grid / max(H, W))
    return max(2, int(round(H * s))), max(2, int(round(W * s)))


def fit_one_image(
    clf: Classifier,
    x01: torch.Tensor,
    cfg: VarSalConfig,
    progress: Optional[Callable] = None,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Optimise μ and log ν (each (h, w)) for one image (1, 3, H, W) with the ELBO of Eq. 5.

    Every step draws ``n_mc`` samples (z, k, baseline) at once, then forwards them ``batch_size``
    at a time accumulating the gradient, so the result does not depend on ``batch_size``; on CUDA
    out-of-memory the batch is halved and the step retried. Returns (μ, log ν, info).
    """
    dev = clf.device
    h, w = grid_size(clf.input_size, cfg.grid)
    beta = cfg.beta_for(h, w)
    gen = torch.Generator(device=dev).manual_seed(int(cfg.seed))
    mu = torch.zeros((h, w), device=dev, requires_grad=True)
    log_nu = softtv.optimal_log_variance(h, w, cfg.alpha, dev).clone().requires_grad_(True)
    opt = torch.optim.Adam([mu, log_nu], lr=cfg.lr)
    with torch.no_grad():
        log_p = torch.log_softmax(clf.logits01(x01).float(), dim=1)
        blurred = references.reference("blur", x01, sigma=cfg.blur_sigma)
    bs = int(cfg.batch_size)
    history = []
    report(progress, 0, cfg.steps, "per-image VarSal")
    for step in range(cfg.steps):
        n = cfg.n_mc
        z = torch.randn((n, h, w), generator=gen, device=dev)
        k = draw_k(n, h * w, cfg.k_min, cfg.k_max, gen)
        with torch.no_grad():
            xbar = baselines(x01.expand(n, -1, -1, -1), draw_kinds(n, cfg.baseline, gen), gen, cfg.blur_sigma, cfg.noise_std, blurred)

        def data_term(bs: int) -> float:  # the whole step again at half the batch on CUDA OOM
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for i in range(0, n, bs):
                sl = slice(i, min(n, i + bs))
                s = mu + (0.5 * log_nu).exp() * z[sl]  # reparameterisation
                lik = likelihood(clf, x01.expand(s.shape[0], -1, -1, -1), log_p.expand(s.shape[0], -1), s, k[sl], xbar[sl], cfg.topk_eps, cfg.sinkhorn_iters)
                (lik.sum() / n).backward()
                total += float(lik.detach().sum())
            return total

        lik_total = with_oom_backoff(data_term, bs)
        kl = softtv.kl_to_prior(mu, log_nu, cfg.alpha)
        (beta * kl).backward()
        for group in opt.param_groups:  # cosine decay: large early steps, a settled map at the end
            group["lr"] = cfg.lr * 0.5 * (1.0 + math.cos(math.pi * step / cfg.steps))
        opt.step()
        with torch.no_grad():
            log_nu.clamp_(*Encoder.LOG_NU_RANGE)
        history.append((lik_total / n, float(kl.detach())))
        report(progress, step + 1, cfg.steps, f"likelihood {lik_total / n:.3f} nats")
    info = {"grid": [h, w], "beta": beta, "steps": cfg.steps, "final_likelihood": history[-1][0], "final_prior_kl": history[-1][1]}
    return mu.detach(), log_nu.detach(), info


# ---------------------------------------------------------------------------------------------
# the method


def upsample(a: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(n, h, w) -> (n, H, W), bilinear (half-pixel centres); unchanged when already that size."""
    if tuple(a.shape[-2:]) == tuple(size):
        return a
    return F.interpolate(a.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


@torch.inference_mode()
def encode(enc: Encoder, x01: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The amortised posterior for a batch (B, 3, H, W): (μ, √ν), each (B, H, W) at ``size``."""
    mu, log_nu = enc(x01)
    return upsample(mu, size), upsample((0.5 * log_nu).exp(), size)


def run(clf: Classifier, x01: torch.Tensor, target: int, config: VarSalConfig, progress: Optional[Callable] = None) -> MethodOutput:
    """Posterior mean and standard deviation of the saliency map (maps ``mean`` and ``std``).

    VarSal explains the whole predictive distribution, not one class (Section 3.1): ``target``
    does not change the maps.
    """
    path, why = _choose(clf, config)
    H, W = clf.input_size
    meta: dict = {"amortised": path is not None, "how": why}
    if path is not None:
        enc, card = load_encoder(path, clf.device)
        with torch.inference_mode():
            mu, log_nu = enc(x01.to(clf.device))
        mu, log_nu = mu[0], log_nu[0]
        meta.update(
            encoder=str(path), grid=list(mu.shape), beta=config.beta_for(*mu.shape),
            encoder_width=card["config"]["encoder"]["width"], encoder_stride=card["config"]["encoder"].get("stride", 1),
        )
    else:
        mu, log_nu, info = fit_one_image(clf, x01, config, progress)
        meta.update(info)
    std = (0.5 * log_nu).exp()
    samples = None
    if config.n_samples:
        gen = torch.Generator(device=mu.device).manual_seed(int(config.seed) + 1)
        z = torch.randn((config.n_samples,) + tuple(mu.shape), generator=gen, device=mu.device)
        samples = mu + std * z
    # a coarser map (per-image grid, strided encoder) is upsampled bilinearly to the input size
    mu, std = upsample(mu[None], (H, W))[0], upsample(std[None], (H, W))[0]
    samples = upsample(samples, (H, W)) if samples is not None else None
    extras = {"samples": samples.detach().cpu().numpy()} if samples is not None else {}
    return MethodOutput(maps={"mean": mu.detach().cpu(), "std": std.detach().cpu()}, extras=extras, meta=meta)


register(
    MethodSpec(
        name="varsal",
        title="VarSal (variational saliency)",
        config=VarSalConfig,
        run=run,
        maps={"mean": "signed", "std": "positive"},
        units={"mean": "prior s.d.", "std": "prior s.d."},
        paper="002_41cd62fe8cab1855",
        needs_fit=True,
    )
)
