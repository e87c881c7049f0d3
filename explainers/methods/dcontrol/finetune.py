"""Fine-tuning (Section 3.3): ``mask_finetuned`` from a mask and the classifier.

With ``r_i`` the i-th highest score and ``q_i`` the target's probability when only the top ``i``
pixels are kept (the rest replaced by the reference, a blurred copy), ``q`` is made monotone
(``q_i = max_{j<=i} q_j``), the extra importance is ``v_i = q_max − q_i`` and ``r'_i = r_i · v_i``;
``q`` is evaluated at ``samples`` evenly spaced ``i`` and linearly interpolated in between.

Pixels are ranked by the mask with ties broken by the upsampled ``z`` (the basic transformer's
zeros have a ranking too); ``i`` counts kept pixels, so ``v_i`` of the pixel of rank ``i``
includes it. Ranking is preserved: ``r_i > r_j ⇒ r'_i ≥ r'_j``, strictly wherever ``r'_j > 0``;
pixels after the (monotone) probability has reached its maximum get 0.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch

from ...batching import map_chunks
from ...classifiers.base import Classifier
from ..references import blur as _blur
from .optimise import composite


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

