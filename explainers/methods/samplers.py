"""Patch samplers for PMI / IG: in-fills for a K×K patch drawn given its 3K×3K neighbourhood.

The paper (Sec. III-A, Eq. 3) marginalises a patch x_r by Monte-Carlo:
p(y | x_\\r) ≈ 1/N Σ_n p(y | x_\\r, x̃_r^(n)) with x̃_r ~ p(X_r | x̂_\\r), where x̂_\\r is the
3K×3K patch centred on x_r with x_r itself hidden. Every sampler here has that signature; they
differ in the model of p(X_r | x̂_\\r):

- ``patchsampler``: the paper's PatchSampler (Appendix B.C), a small conv net giving a 256-way
  categorical per pixel and channel, from which pixels and channels are drawn independently
  (the paper's factorised model; one forward per patch serves all N in-fills); fitted per
  dataset and per K by
  ``python -m explainers fit --explainer patchsampler --data SOURCE``;
- ``gaussian``: the conditional Gaussian of Zintgraf et al.'s PDA (the paper's "C.G." baseline):
  a Gaussian fitted on 3K×3K neighbourhoods of the same data, conditioned on the ring;
- ``blur``: a smooth in-fill from the ring (normalised Gaussian blur with the patch masked out);
- ``mean``: the ring's mean colour (the paper's "patch mean" replacement, computed from the
  neighbourhood so the patch's own pixels are not used);
- ``noise``: uniform U(0, 1) per pixel and channel (the paper's "noise");
- ``constant``: a grey level ``value`` (the paper's "black" is ``value=0``).

All work in pixel space [0, 1] on the classifier's device and draw randomness only from a
``torch.Generator``; the random numbers for all patches are drawn up front in a fixed order, so
results do not depend on how the work is batched.

Fitted samplers are per data and per K (the PatchSampler's geometry is 3K×3K in, K×K out; the
Gaussian's dimension is 3·(3K)²): ``patchsampler.safetensors`` / ``gaussian.safetensors`` for the
paper's K = 8, ``*_k{K}.safetensors`` for others (``--set K=4``), looked up in
``$EXPLAINERS_HOME/fitted/samplers/<data>/`` first, then in the committed
``assets/explainers/samplers/<data>/`` (K = 8 for ``shapes``, ``digits`` and ``photos``; K = 4 for ``shapes``). A
missing K is a one-line error naming the command that fits it; the other samplers work at any K.

Borders: a neighbourhood that reaches past the image edge is completed by reflect padding (the
paper does not say; the PatchSampler and the Gaussian are fitted on crops padded the same way).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import fitted
from ..errors import ExplainerError
from .references import blur as _blur
from .references import reference

SAMPLERS = ("patchsampler", "gaussian", "blur", "mean", "noise", "constant")
STOCHASTIC = ("patchsampler", "gaussian", "noise")
LEVELS = 256  # grey levels per channel (8-bit pixels)
DEFAULT_K = 8  # the K whose fitted files carry no suffix (the paper's default)
_ROOT = fitted.committed_dir("samplers")
CHUNK = 64  # patches per sampler forward (fixed, so results never depend on the batch size)


# ---------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------
def patch_positions(size: int, K: int, stride: int) -> np.ndarray:
    """Top-left offsets 0, S, 2S, ... of K-wide patches fully inside ``size`` pixels.

    When (size − K) is not a multiple of S the last offset size − K is added, so that every pixel
    is covered by at least one patch (Algorithm 1 distributes each patch's value to its pixels;
    an uncovered border would get no value).
    """
    pos = list(range(0, size - K + 1, stride))
    if pos[-1] != size - K:
        pos.append(size - K)
    return np.asarray(pos, dtype=np.int64)


def patch_boxes(h: int, w: int, K: int, stride: int) -> np.ndarray:
    """(P, 4) int boxes x0, y0, x1, y1 (exclusive) of all patches, row-major."""
    ys, xs = patch_positions(h, K, stride), patch_positions(w, K, stride)
    y0, x0 = np.meshgrid(ys, xs, indexing="ij")
    y0, x0 = y0.ravel(), x0.ravel()
    return np.stack([x0, y0, x0 + K, y0 + K], axis=1)


def pad_mode(K: int, h: int, w: int) -> str:
    return "reflect" if K < min(h, w) else "replicate"


def pad_image(x: torch.Tensor, K: int) -> torch.Tensor:
    """Pad (B, C, H, W) by K on every side (reflect; replicate when K ≥ the image side)."""
    return F.pad(x, (K, K, K, K), mode=pad_mode(K, x.shape[-2], x.shape[-1]))


def hole_mask(K: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(3K, 3K) float: 1 on the known ring, 0 on the centre K×K patch."""
    m = torch.ones(3 * K, 3 * K, device=device)
    m[K : 2 * K, K : 2 * K] = 0
    return m


def neighbourhoods(x01: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor, K: int) -> torch.Tensor:
    """The 3K×3K neighbourhoods (P, 3, 3K, 3K) centred on the patches at (y0, x0) of x01 (1, 3, H, W)."""
    xp = pad_image(x01, K)[0]  # patch (y0, x0) -> neighbourhood starts at (y0, x0) in padded coords
    ar = torch.arange(3 * K, device=x01.device)
    rows = (y0.to(x01.device)[:, None] + ar)[:, :, None]
    cols = (x0.to(x01.device)[:, None] + ar)[:, None, :]
    return xp[:, rows, cols].permute(1, 0, 2, 3)


def paste(x01: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor, fills: torch.Tensor) -> torch.Tensor:
    """Copies of x01 (1, 3, H, W) with fills (B, 3, K, K) written at (y0[b], x0[b])."""
    B, _, K, _ = fills.shape
    out = x01.expand(B, -1, -1, -1).clone()
    ar = torch.arange(K, device=x01.device)
    rows = (y0.to(x01.device)[:, None] + ar)[:, :, None]
    cols = (x0.to(x01.device)[:, None] + ar)[:, None, :]
    b = torch.arange(B, device=x01.device)[:, None, None]
    out.permute(0, 2, 3, 1)[b, rows, cols] = fills.permute(0, 2, 3, 1).to(out.dtype)
    return out


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


@functools.lru_cache(maxsize=16)
def load_patchsampler(path: str, device: str) -> PatchSamplerNet:
    """The fitted PatchSampler at ``path`` on ``device`` (loaded once; never modified)."""
    tensors, card = fitted.load_fitted(path, device)
    cfg = card["config"]
    net = PatchSamplerNet(int(cfg["K"]), int(cfg["channels"]), int(cfg["width"]), kernel2=int(cfg.get("kernel2", 0)))
    net.load_state_dict(tensors)
    net.to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


@functools.lru_cache(maxsize=16)
def load_gaussian(path: str, device: str) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, card = fitted.load_fitted(path, device)
    return tensors, card["config"]


# ---------------------------------------------------------------------------------------------
# the samplers
# ---------------------------------------------------------------------------------------------
class Sampler:
    """Draws in-fills (P, N, 3, K, K) for neighbourhoods (P, 3, 3K, 3K).

    ``draws(P, N, generator)`` returns all random numbers for P patches up front (or None for a
    deterministic sampler); ``fill(neigh, draws)`` turns a chunk of neighbourhoods and its slice
    of the draws into in-fills.
    """

    deterministic = False

    def __init__(self, K: int, device: torch.device):
        self.K, self.device = K, device

    def draws(self, P: int, N: int, generator: torch.Generator) -> Optional[torch.Tensor]:
        return None

    def fill(self, neigh: torch.Tensor, draws: Optional[torch.Tensor], N: int) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict:
        return {}


class ConstantSampler(Sampler):
    deterministic = True

    def __init__(self, K, device, value: float = 0.5):
        super().__init__(K, device)
        self.value = value

    def fill(self, neigh, draws, N):
        P, K = neigh.shape[0], self.K
        return reference("constant", neigh.new_empty(P, 3, K, K), value=self.value)[:, None].expand(P, N, 3, K, K)


class MeanSampler(Sampler):
    deterministic = True

    def fill(self, neigh, draws, N):
        m = hole_mask(self.K, neigh.device)
        mean = (neigh * m).sum(dim=(2, 3)) / m.sum()
        P, K = neigh.shape[0], self.K
        return mean[:, None, :, None, None].expand(P, N, 3, K, K)


class BlurSampler(Sampler):
    """Normalised convolution: blur(x · m) / blur(m) on the hole, m = the ring mask, σ = ``sigma``."""

    deterministic = True

    def __init__(self, K, device, sigma: Optional[float] = None):
        super().__init__(K, device)
        self.sigma = float(sigma) if sigma is not None else K / 2.0

    def fill(self, neigh, draws, N):
        K = self.K
        m = hole_mask(K, neigh.device).expand(neigh.shape[0], 1, -1, -1)
        num = _blur(neigh * m, self.sigma)
        den = _blur(m, self.sigma).clamp_min(1e-8)
        out = (num / den)[:, :, K : 2 * K, K : 2 * K].clamp(0, 1)
        return out[:, None].expand(-1, N, -1, -1, -1)

    def describe(self):
        return {"sigma": self.sigma}


class NoiseSampler(Sampler):
    def draws(self, P, N, generator):
        K = self.K
        return reference("noise", torch.empty(P, N, 3, K, K, device=self.device), generator=generator)

    def fill(self, neigh, draws, N):
        return draws


class GaussianSampler(Sampler):
    def __init__(self, K, device, key: str):
        super().__init__(K, device)
        self.path = find_fitted("gaussian", key, K)
        self.stats, cfg = load_gaussian(str(self.path), str(device))
        self.channels = int(cfg["channels"])

    def draws(self, P, N, generator):
        d = self.stats["L"].shape[0]
        return torch.randn(P, N, d, generator=generator, device=generator.device).to(self.device)

    def fill(self, neigh, draws, N):
        K, C = self.K, self.channels
        x = neigh.mean(dim=1, keepdim=True) if C == 1 else neigh
        flat = x.reshape(x.shape[0], -1)
        hole = (hole_mask(K, x.device) == 0).expand(C, -1, -1).reshape(-1)
        mu, A, L = self.stats["mu"], self.stats["A"], self.stats["L"]
        mean = mu[hole] + (flat[:, ~hole] - mu[~hole]) @ A.T  # μ_a|b
        z = mean[:, None, :] + draws @ L.T  # (P, N, Da)
        out = z.clamp(0, 1).view(x.shape[0], N, C, K, K)
        return out.expand(-1, -1, 3, -1, -1) if C == 1 else out

    def describe(self):
        return {"path": str(self.path)}


class PatchSampler(Sampler):
    def __init__(self, K, device, key: str):
        super().__init__(K, device)
        self.path = find_fitted("patchsampler", key, K)
        self.net = load_patchsampler(str(self.path), str(device))
        self.channels = self.net.channels

    def draws(self, P, N, generator):
        K, C = self.K, self.channels
        return torch.rand(P, K, K, C, N, generator=generator, device=generator.device).to(self.device)

    @torch.no_grad()
    def fill(self, neigh, draws, N):
        # one sampler forward per patch; all N in-fills drawn from its per-pixel categoricals
        logits = self.net(self.net.to_input(neigh).float())  # (P, K, K, C, 256)
        levels = sample_from_logits(logits, draws)  # (P, K, K, C, N)
        out = levels.permute(0, 4, 3, 1, 2).to(neigh.dtype) / (LEVELS - 1)
        return out.expand(-1, -1, 3, -1, -1) if self.channels == 1 else out

    def describe(self):
        return {"path": str(self.path)}


def make_sampler(
    name: str,
    K: int,
    device: torch.device,
    key: str = "photos",
    value: float = 0.5,
    sigma: Optional[float] = None,
) -> Sampler:
    """The sampler called ``name`` for patch size K; ``key`` picks fitted files (see ``sampler_key``)."""
    if name == "patchsampler":
        return PatchSampler(K, device, key)
    if name == "gaussian":
        return GaussianSampler(K, device, key)
    if name == "blur":
        return BlurSampler(K, device, sigma)
    if name == "mean":
        return MeanSampler(K, device)
    if name == "noise":
        return NoiseSampler(K, device)
    if name == "constant":
        return ConstantSampler(K, device, value)
    raise ExplainerError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


class InFills:
    """N in-fills per patch, made on demand, one chunk of ``CHUNK`` patches per sampler forward.

    Chunk c draws its random numbers from a generator seeded with (``seed``, c), so the in-fills
    depend only on the seed — never on how the classifier's batches fall — and only the chunks
    the current batch needs are kept in memory (a 224×224 image at stride 1 has ~47k patches).
    """

    def __init__(self, sampler: Sampler, x01: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor, N: int, seed: int):
        self.sampler, self.x01, self.N, self.seed = sampler, x01, int(N), int(seed)
        self.y0, self.x0 = y0.to(x01.device), x0.to(x01.device)
        self.P = int(y0.shape[0])
        self.n_chunks = (self.P + CHUNK - 1) // CHUNK
        self._cache: dict[int, torch.Tensor] = {}

    def chunk(self, c: int) -> torch.Tensor:
        """In-fills (n, N, 3, K, K) of the patches c·CHUNK ... (c+1)·CHUNK − 1."""
        if c not in self._cache:
            sl = slice(c * CHUNK, min((c + 1) * CHUNK, self.P))
            gen = torch.Generator(device=self.x01.device).manual_seed(self.seed * 1_000_003 + c)
            neigh = neighbourhoods(self.x01, self.y0[sl], self.x0[sl], self.sampler.K)
            draws = self.sampler.draws(neigh.shape[0], self.N, gen)
            self._cache[c] = self.sampler.fill(neigh, draws, self.N).to(self.x01.dtype)
        return self._cache[c]

    def take(self, r: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """In-fills (B, 3, K, K) for patch indices ``r`` (ascending) and draw indices ``n``."""
        cs = r // CHUNK
        lo, hi = int(cs[0]), int(cs[-1])
        for c in [c for c in self._cache if c < lo]:
            del self._cache[c]  # batches move forward: earlier chunks are done
        parts = [self.chunk(c)[r[cs == c] - c * CHUNK, n[cs == c]] for c in range(lo, hi + 1)]
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def all(self) -> torch.Tensor:
        """In-fills (P, N, 3, K, K) of every patch (small images and tests)."""
        out = torch.cat([self.chunk(c) for c in range(self.n_chunks)])
        self._cache.clear()
        return out


def infills(
    clf_or_key: Any,
    x01: torch.Tensor,
    patch_xy: tuple[int, int],
    K: int = DEFAULT_K,
    N: int = 8,
    sampler: str = "patchsampler",
    seed: int = 0,
    value: float = 0.5,
    sigma: Optional[float] = None,
) -> dict[str, np.ndarray]:
    """A look inside (the paper's Fig. 14): N in-fills of one patch and the neighbourhood they see.

    ``clf_or_key`` is a classifier (its fitted samplers and device are used) or a data key
    (``shapes``, ``digits``, ``photos`` or a folder). ``x01`` is (3, H, W) or (1, 3, H, W) in
    [0, 1]; ``patch_xy`` = (x0, y0) is the patch's top-left corner. Returns numpy arrays:
    ``neighbourhood`` (3, 3K, 3K), ``hole`` (3K, 3K) bool, ``infills`` (N, 3, K, K) and
    ``filled`` (N, 3, 3K, 3K) = the neighbourhood with each in-fill pasted in.
    """
    if isinstance(clf_or_key, str):
        key, device = clf_or_key, torch.device("cpu")
    else:
        key, device = sampler_key(clf_or_key), clf_or_key.device
    x = x01.detach().float().to(device)
    x = x[None] if x.dim() == 3 else x
    h, w = x.shape[-2:]
    px, py = int(patch_xy[0]), int(patch_xy[1])
    if not (1 <= K <= min(h, w)):
        raise ExplainerError(f"K={K} must be between 1 and the image's shorter side {min(h, w)}")
    if not (0 <= px <= w - K and 0 <= py <= h - K):
        raise ExplainerError(f"patch at ({px}, {py}) must lie inside the {w}x{h} image")
    if N < 1:
        raise ExplainerError("N must be at least 1")
    s = make_sampler(sampler, K, device, key, value, sigma)
    y0 = torch.tensor([py], device=device)
    x0 = torch.tensor([px], device=device)
    fills = InFills(s, x, y0, x0, N, seed).all()[0]  # (N, 3, K, K)
    neigh = neighbourhoods(x, y0, x0, K)[0]
    filled = neigh[None].repeat(N, 1, 1, 1)
    filled[:, :, K : 2 * K, K : 2 * K] = fills
    return {
        "neighbourhood": neigh.cpu().numpy(),
        "hole": (hole_mask(K) == 0).numpy(),
        "infills": fills.cpu().numpy(),
        "filled": filled.cpu().numpy(),
    }


def sampler_card(kind: str, key: str, K: int) -> dict:
    """The JSON card of a fitted sampler (config and training facts), for pages and READMEs."""
    path = find_fitted(kind, key, K)
    return json.loads(path.with_suffix(".json").read_text())


__all__ = [
    "CHUNK",
    "InFills",
    "SAMPLERS",
    "PatchSamplerNet",
    "gaussian_from_moments",
    "infills",
    "make_sampler",
    "patch_boxes",
    "patch_positions",
    "sampler_card",
    "sampler_key",
]
