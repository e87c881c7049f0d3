"""VarSal's objective (paper 002, Eq. 2, 3, 5, 7) and its per-image optimisation.

The baselines x̄, the draws of k, the likelihood term through the SOFT top-k mask, and
:func:`fit_one_image`, which optimises μ and log ν for one image when no fitted encoder is used.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ...batching import with_oom_backoff
from ...classifiers.base import Classifier
from ...progress import report
from .. import references, softtv
from ..soft_topk import soft_topk
from .config import BASELINES, FULL_RES_SIDE, SMALL_GRID, VarSalConfig
from .encoder import Encoder, upsample


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


@torch.no_grad()
def negative_elbo(
    clf: Classifier,
    x01: torch.Tensor,
    mu: torch.Tensor,
    log_nu: torch.Tensor,
    cfg: VarSalConfig,
    n: int = 32,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Eq. 5 for given posteriors, estimated with ``n`` draws (z, k, x̄) per image: per image (B,),
    ``likelihood`` (nats, the Monte-Carlo mean of Eq. 2), ``prior_kl`` (Eq. 7, exact) and ``loss`` =
    likelihood + β·prior_kl (the negative ELBO up to a constant; lower is better).

    ``x01`` (B, 3, H, W), ``mu`` and ``log_nu`` (B, h, w) on any grid (the mask is upsampled as in
    training). The draws depend only on ``seed``, ``n`` and the grid, so two posteriors for the same
    images (the encoder's and the per-image fit's) are compared on the very same draws."""
    dev = clf.device
    B, h, w = mu.shape
    x01, mu, log_nu = x01.to(dev), mu.to(dev).float(), log_nu.to(dev).float()
    lik = torch.zeros(B, device=dev)
    blurred = references.reference("blur", x01, sigma=cfg.blur_sigma)
    log_p = torch.log_softmax(clf.logits01(x01).float(), dim=1)
    for b in range(B):
        gen = torch.Generator(device=dev).manual_seed(int(seed))
        z = torch.randn((n, h, w), generator=gen, device=dev)
        k = draw_k(n, h * w, cfg.k_min, cfg.k_max, gen)
        xb = x01[b : b + 1].expand(n, -1, -1, -1)
        xbar = baselines(xb, draw_kinds(n, cfg.baseline, gen), gen, cfg.blur_sigma, cfg.noise_std, blurred[b : b + 1])
        s = mu[b] + (0.5 * log_nu[b]).exp() * z
        lik[b] = likelihood(clf, xb, log_p[b : b + 1].expand(n, -1), s, k, xbar, cfg.topk_eps, cfg.sinkhorn_iters).mean()
    kl = softtv.kl_to_prior(mu, log_nu, cfg.alpha)
    return {"likelihood": lik.cpu(), "prior_kl": kl.cpu(), "loss": (lik + cfg.beta_for(h, w) * kl).cpu()}


# ---------------------------------------------------------------------------------------------
# per-image variational inference


def grid_size(input_size: tuple[int, int], grid: Optional[int]) -> tuple[int, int]:
    """The per-image saliency grid: the input size, capped at ``grid`` cells on the longer side;
    ``grid`` None (auto): full resolution from ``FULL_RES_SIDE`` px a side, else ``SMALL_GRID`` cells."""
    H, W = input_size
    if grid is None:
        grid = max(H, W) if min(H, W) >= FULL_RES_SIDE else SMALL_GRID
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
        part = None  # anytime: the posterior so far at each tenth of the run (one host copy), at the input's size
        if progress is not None and (step + 1) % max(1, cfg.steps // 10) == 0 and step + 1 < cfg.steps:
            with torch.no_grad():
                size = tuple(x01.shape[-2:])
                part = {"mean": upsample(mu.detach()[None], size)[0].float().cpu().numpy(),
                        "std": upsample((0.5 * log_nu.detach()).exp()[None], size)[0].float().cpu().numpy()}
        report(progress, step + 1, cfg.steps, f"likelihood {lik_total / n:.3f} nats", partial=part)
    info = {"grid": [h, w], "beta": beta, "steps": cfg.steps, "final_likelihood": history[-1][0], "final_prior_kl": history[-1][1]}
    return mu.detach(), log_nu.detach(), info
