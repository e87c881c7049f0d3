"""The fitted samplers: the PatchSampler network (Appendix B.C, adapted), the conditional Gaussian
(Zintgraf et al.'s PDA), and finding and loading their files.

Fitted samplers are per data and per K: ``patchsampler.safetensors`` / ``gaussian.safetensors`` at
the paper's K = 8, ``*_k{K}.safetensors`` for others, in the user's folder first, then the committed
one (``explainers.fitted.search_dirs("samplers/<data>")``).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ... import fitted
from ...errors import ExplainerError
from .geometry import hole_mask

LEVELS = 256  # grey levels per channel (8-bit pixels)
DEFAULT_K = 8  # the K whose fitted files carry no suffix (the paper's default)
COMMITTED = fitted.committed_dir("samplers")  # the project's fits, one folder per data key


# ---------------------------------------------------------------------------------------------
# the PatchSampler network (Appendix B.C, adapted)
# ---------------------------------------------------------------------------------------------
class PatchSamplerNet(nn.Module):
    """p_φ(X_r | x̂_\\r): a 256-way categorical per pixel and channel of the K×K centre.

    The paper's stack (Appendix B.C) for K = 8 is conv9-256, conv9-256, maxpool2, crop 2,
    4 × conv8-256, conv8-768 (3 channels × 256-way softmax), LeakyReLU(0.2) after every conv but
    the last. We keep that shape with these adaptations, so that one forward per patch costs a
    small fraction of the classifier's forwards (the speed target) and it trains on a CPU in
    minutes:

    - width ``width`` (default 32) instead of 256;
    - the first conv has kernel 2⌊K/4⌋ + 1 (5 at K = 8, at most 9) and the second ``kernel2``
      (3 in the committed fits) instead of K + 1 = 9 for both, 'same' padding;
    - the pool has stride 2: the paper's text says stride 1, but only stride 2 makes the sizes
      close (3K → 3K/2, then cropping ⌊K/2⌋ pixels in total leaves exactly K×K: crop 2 per edge at
      K = 8, as the paper says); with stride 1 no crop gives K×K;
    - the four middle convs are 3×3 ('same') on the K×K grid and the output conv is 1×1, instead
      of K×K kernels: the receptive field still spans the whole 3K×3K neighbourhood;
    - the hidden patch is zeroed (after centring pixels to [−1, 1]) and a fourth input channel
      carries the ring/hole mask, so "unknown" differs from "mid-grey";
    - ``channels`` = 1 for grey-level data (digits): one 256-way categorical per pixel, copied
      to R, G and B.
    """

    def __init__(self, K: int, channels: int = 3, width: int = 32, levels: int = LEVELS, kernel2: int = 0):
        super().__init__()
        self.K, self.channels, self.width, self.levels = K, channels, width, levels
        k1 = min(2 * (K // 4) + 1, 9)  # odd, 'same'-padded: 5 at K = 8
        k2 = kernel2 or k1
        self.kernels = (k1, k2)
        self.conv1 = nn.Conv2d(channels + 1, width, k1, padding=k1 // 2)
        self.conv2 = nn.Conv2d(width, width, k2, padding=k2 // 2)
        self.pool = nn.MaxPool2d(2, 2)
        pooled = (3 * K) // 2
        self.crop = ((pooled - K) // 2, pooled - K - (pooled - K) // 2)
        self.body = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in range(4))
        self.out = nn.Conv2d(width, channels * levels, 1)
        self.act = nn.LeakyReLU(0.2)
        self.register_buffer("mask", hole_mask(K), persistent=False)

    def to_input(self, neigh01: torch.Tensor) -> torch.Tensor:
        """(B, 3, 3K, 3K) RGB in [0, 1] -> (B, C, 3K, 3K) in the sampler's channels."""
        return neigh01.mean(dim=1, keepdim=True) if self.channels == 1 else neigh01

    def forward(self, neigh01: torch.Tensor) -> torch.Tensor:
        """Neighbourhoods (B, C, 3K, 3K) in [0, 1] (the centre is ignored) -> logits (B, K, K, C, 256).

        The 256 levels come last (the output 1×1 conv is applied as a matrix product on
        channel-last features), so that sampling needs no transposed copy.
        """
        m = self.mask.to(neigh01.dtype)
        h = torch.cat([(neigh01 * 2 - 1) * m, m.expand(neigh01.shape[0], 1, -1, -1)], dim=1)
        h = h.contiguous(memory_format=torch.channels_last)  # faster convolutions on CPU
        h = self.act(self.conv1(h))
        h = self.act(self.conv2(h))
        h = self.pool(h)
        a, b = self.crop
        h = h[:, :, a : h.shape[-2] - b, a : h.shape[-1] - b]
        for conv in self.body:
            h = self.act(conv(h))
        w = self.out.weight.view(self.out.out_channels, -1)
        logits = F.linear(h.permute(0, 2, 3, 1), w, self.out.bias)  # (B, K, K, C·256)
        return logits.view(h.shape[0], self.K, self.K, self.channels, self.levels)


def sample_from_logits(logits: torch.Tensor, u: torch.Tensor, rows: int = 4096) -> torch.Tensor:
    """Inverse-CDF draws from softmax(logits) over the last axis, IN PLACE on ``logits``.

    logits (..., L) and uniforms (..., N) -> level indices (..., N). Works through ``rows``
    distributions at a time so the temporaries stay in cache (a large speed-up on CPU).
    """
    lg = logits.reshape(-1, logits.shape[-1])
    uu = u.reshape(lg.shape[0], -1)
    out = torch.empty(uu.shape, dtype=torch.long, device=lg.device)
    for i in range(0, lg.shape[0], rows):
        c = lg[i : i + rows]
        c.sub_(c.amax(-1, keepdim=True)).exp_().cumsum_(-1)  # unnormalised CDF
        out[i : i + rows] = torch.searchsorted(c, uu[i : i + rows] * c[:, -1:], right=True)
    return out.clamp_(max=logits.shape[-1] - 1).view(u.shape)


def sample_categorical(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draws: probs (..., L) and uniforms (..., N) -> level indices (..., N)."""
    return sample_from_logits(torch.log(probs.clamp_min(0)).clone(), u)


# ---------------------------------------------------------------------------------------------
# the conditional Gaussian (Zintgraf et al.'s PDA)
# ---------------------------------------------------------------------------------------------
def gaussian_from_moments(mean: torch.Tensor, cov: torch.Tensor, K: int, channels: int, eps: float = 1e-4) -> dict:
    """Precompute p(x_r | ring) for a Gaussian over flattened (C, 3K, 3K) neighbourhoods.

    With a = the patch, b = the ring: μ_a|b = μ_a + Σ_ab Σ_bb⁻¹ (x_b − μ_b) and
    Σ_a|b = Σ_aa − Σ_ab Σ_bb⁻¹ Σ_ba (Schur complement). ``eps`` is added to the diagonal (pixel
    variances are ~0.05; some data has constant regions). Returns tensors ``mu`` (D,),
    ``A`` = Σ_ab Σ_bb⁻¹ (Da, Db) and ``L`` = chol(Σ_a|b) (Da, Da).
    """
    cov = cov.double() + eps * torch.eye(cov.shape[0], dtype=torch.float64)
    hole = (hole_mask(K) == 0).expand(channels, -1, -1).reshape(-1)
    ia, ib = hole.nonzero()[:, 0], (~hole).nonzero()[:, 0]
    s_bb = cov[ib][:, ib]
    s_ab = cov[ia][:, ib]
    A = torch.linalg.solve(s_bb, s_ab.T).T
    cond = cov[ia][:, ia] - A @ s_ab.T
    cond = (cond + cond.T) / 2
    L = torch.linalg.cholesky(cond + eps * torch.eye(len(ia), dtype=torch.float64))
    return {"mu": mean.float(), "A": A.float(), "L": L.float()}


# ---------------------------------------------------------------------------------------------
# finding and loading fitted samplers
# ---------------------------------------------------------------------------------------------
def sampler_key(clf: Any) -> str:
    """Which fitted samplers a classifier uses: its dataset's, else the natural-photo ones.

    ``shapes-two`` / ``shapes-biased`` fall back to ``shapes`` when they have none of their own;
    torchvision and user models use ``photos`` (fitted on scikit-image's photographs).
    """
    ds = getattr(clf, "dataset", None)
    if ds:
        for key in (ds, ds.split("-")[0]):
            if _candidates(key):
                return key
        return ds.split("-")[0]
    return "photos"


def _candidates(key: str) -> list[Path]:
    p = Path(key).expanduser()
    if p.is_dir():
        return [p]
    return [d for d in fitted.search_dirs(f"samplers/{key}") if d.is_dir()]


def fitted_name(kind: str, K: int) -> str:
    """File stem of a fitted sampler: ``patchsampler`` at the default K, ``patchsampler_k4`` otherwise."""
    return kind if K == DEFAULT_K else f"{kind}_k{K}"


def find_fitted(kind: str, key: str, K: int) -> Path:
    """Path of the fitted ``kind`` (patchsampler | gaussian) for data ``key`` and patch size K."""
    name = fitted_name(kind, K)
    for d in _candidates(key):
        path = d / f"{name}.safetensors"
        if path.exists() and path.with_suffix(".json").exists():
            return path
    have = sorted(
        {json.loads(p.read_text()).get("config", {}).get("K") for d in _candidates(key) for p in d.glob(f"{kind}*.json")}
        - {None}
    )
    where = f"there is one for K = {', '.join(map(str, have))}" if have else "none is fitted for this data"
    raise ExplainerError(
        f"no {kind} fitted for data {key!r} at K={K} ({where}); fit one with "
        f"`python -m explainers fit --explainer patchsampler --data {key} --set K={K}`, or pick another sampler"
    )


def _build_patchsampler(card: dict) -> PatchSamplerNet:
    cfg = card["config"]
    return PatchSamplerNet(int(cfg["K"]), int(cfg["channels"]), int(cfg["width"]), kernel2=int(cfg.get("kernel2", 0)))


def load_patchsampler(path: str, device: str) -> PatchSamplerNet:
    """The fitted PatchSampler at ``path`` on ``device`` (loaded once per file version; never modified)."""
    return fitted.load_frozen(path, device, _build_patchsampler)[0]


@functools.lru_cache(maxsize=16)
def _load_gaussian(path: str, device: str, _stamp: tuple) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, card = fitted.load_fitted(path, device)
    return tensors, card["config"]


def load_gaussian(path: str, device: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The fitted conditional Gaussian's moments and config (loaded once per file version)."""
    return _load_gaussian(str(path), str(device), fitted.file_digest(path))
