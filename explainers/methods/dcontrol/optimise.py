"""The perturbation of Eq. 1 and the per-image optimisation used when there is no fitted generator.

- ``φ(I, M) = I·M + A·(1 − M)`` (:func:`composite`), ``A`` (:func:`backgrounds`) a blurred copy
  of ``I`` half of the time and a random colour plus Gaussian noise otherwise (Section 4). The
  paper blurs with "a variance of 10" at 224 px; taken as σ ≈ 3 px it leaves a 64 px shape
  recognisable, so the blur is σ = side/16 (14 px at 224, 4 px at 64; ``blur_sigma`` overrides
  it). The random colour is uniform per image, the noise Gaussian with s.d. ``noise_std`` = 0.2
  (the paper gives none), clipped to [0, 1].
- :func:`optimise_z`: a free coarse map ``P`` optimised for the one image under the same
  controller and loss, ``M = upsample(C(P))``: Adam, ``iterations`` = 300 at ``lr`` = 0.1 (the
  per-image setting the paper uses for Meaningful Perturbation, Appendix A.2), a batch of
  ``backgrounds`` = 4 random backgrounds per step (half blurred, half colour + noise).
- ``delete`` = 1 (ours; the paper trains a generator and has no per-image objective) adds
  ``delete · −log(1 − p_c(φ(I, 1 − M)))``: the image with the mask's region replaced by the same
  backgrounds should lose the class, as in Dabkowski & Gal's and DSSR's deletion terms. Eq. 4 alone
  asks for a region that is *sufficient*; a confident ImageNet network has many, and deleting one
  of them need not remove the class (issue 24: with Eq. 4 alone, blurring the top 10% of the map
  dropped EfficientNet-Lite0's top-1 probability by 0.054 on chelsea and 0.055 on rocket, with the
  deletion term by 0.177 and 0.256; on shapes-resnet's first 20 test images pointing went from 0.60
  to 0.80 and the drop from 0.39 to 0.69). The controller (the right-skewed transform) is applied
  unchanged; each step forwards 2 × ``backgrounds`` images. ``delete`` = 0 is Eq. 4's loss alone.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ...classifiers.base import Classifier
from ...progress import report
from ..references import blur as _blur
from .config import DControlConfig
from .controller import apply_controller, coarse_size, instance_normalise, upsample


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


def deletion_loss(logits: torch.Tensor, target: int) -> torch.Tensor:
    """``mean −log(1 − p_c)`` over rows of ``logits`` (B, C): the cross-entropy of "not c", computed
    as ``−logsumexp`` of the other classes' log-probabilities (no ``log(1 − p)`` cancellation)."""
    logp = torch.log_softmax(logits, dim=1)
    others = torch.cat([logp[:, :target], logp[:, target + 1:]], dim=1)
    return -torch.logsumexp(others, dim=1).mean()


def optimise_z(
    clf: Classifier,
    x01: torch.Tensor,
    target: int,
    cfg: DControlConfig,
    progress: Optional[Callable] = None,
) -> tuple[torch.Tensor, list[float]]:
    """A free coarse map ``P`` optimised for one image under the controller and Eq. 4's loss:
    ``min_P CE(f(φ(I, upsample(C(IN(P))), A)), c)`` averaged over ``backgrounds`` random A per step,
    plus ``delete ·`` :func:`deletion_loss` of ``φ(I, 1 − M)`` with the same A when ``delete`` > 0.
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
        if cfg.delete > 0:  # preserved and deleted composites in one batch of 2n
            logits = clf.logits01(torch.cat([composite(x, m, a), composite(x, 1 - m.clamp(0, 1), a)])).float()
            loss = F.cross_entropy(logits[:n], tgt) + cfg.delete * deletion_loss(logits[n:], int(target))
        else:
            loss = F.cross_entropy(clf.logits01(composite(x, m, a)).float(), tgt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if (it + 1) % every == 0 or it + 1 == cfg.iterations:
            part = None  # anytime: the raw mask so far every tenth report (the fine-tuned one needs the end)
            if progress is not None and (it + 1) % (10 * every) == 0 and it + 1 < cfg.iterations:
                with torch.no_grad():
                    z = instance_normalise(p.detach())
                    part = {"mask": upsample(apply_controller(z, cfg.transformer, cfg.eta, cfg.h), clf.input_size)[0, 0].float().cpu().numpy()}
            report(progress, it + 1, cfg.iterations, f"loss {losses[-1]:.3f}", partial=part)
    return instance_normalise(p.detach()), losses

