"""The samplers behind one interface (``make_sampler``) and the seeded in-fill stream ``InFills``.

All work in pixel space [0, 1] on the classifier's device and draw randomness only from a
``torch.Generator``; the random numbers for all patches are drawn up front in a fixed order, so
results do not depend on how the work is batched.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from ...errors import ExplainerError
from ..references import blur as _blur
from ..references import reference
from .fits import DEFAULT_K, find_fitted, load_patchsampler, sampler_key
from .gaussian import load_gaussian
from .geometry import hole_mask, known, neighbourhoods
from .network import LEVELS

SAMPLERS = ("patchsampler", "gaussian", "blur", "mean", "noise", "constant")
STOCHASTIC = ("patchsampler", "gaussian", "noise")
CHUNK = 64  # patches per sampler forward (fixed, so results never depend on the batch size)
# The PatchSampler's default sampling temperature (ours; the paper draws at T = 1): at 0.8 its
# in-fills are closer to real ones in the classifiers' features (FD) on digits and smoother on
# shapes, with no measure worse beyond its draw-to-draw spread (README, PMI samplers).
TEMPERATURE = 0.8


class Sampler:
    """Draws in-fills (P, N, 3, K, K) for neighbourhoods (P, 3, 3K, 3K).

    ``draws(P, N, generator)`` returns all random numbers for P patches up front (or None for a
    deterministic sampler); ``fill(neigh, known, draws, N)`` turns a chunk of neighbourhoods, their
    known-pixel masks (P, 1, 3K, 3K) (``geometry.known``; None = the whole ring) and its slice of
    the draws into in-fills. A sampler reads only the pixels ``known`` marks.
    """

    deterministic = False

    def __init__(self, K: int, device: torch.device):
        self.K, self.device = K, device

    def draws(self, P: int, N: int, generator: torch.Generator) -> Optional[torch.Tensor]:
        return None

    def fill(self, neigh: torch.Tensor, known: Optional[torch.Tensor], draws: Optional[torch.Tensor], N: int) -> torch.Tensor:
        raise NotImplementedError

    def _known(self, neigh: torch.Tensor, known: Optional[torch.Tensor]) -> torch.Tensor:
        if known is None:
            return hole_mask(self.K, neigh.device).to(neigh.dtype).expand(neigh.shape[0], 1, -1, -1)
        return known.to(neigh.device, neigh.dtype)

    def describe(self) -> dict:
        return {}


class ConstantSampler(Sampler):
    deterministic = True

    def __init__(self, K, device, value: float = 0.5):
        super().__init__(K, device)
        self.value = value

    def fill(self, neigh, known, draws, N):
        P, K = neigh.shape[0], self.K
        return reference("constant", neigh.new_empty(P, 3, K, K), value=self.value)[:, None].expand(P, N, 3, K, K)


class MeanSampler(Sampler):
    """The known ring pixels' mean colour (grey 0.5 where none is known)."""

    deterministic = True

    def fill(self, neigh, known, draws, N):
        m = self._known(neigh, known)
        cnt = m.sum(dim=(2, 3))
        mean = torch.where(cnt > 0, (neigh * m).sum(dim=(2, 3)) / cnt.clamp_min(1), torch.full_like(cnt, 0.5))
        P, K = neigh.shape[0], self.K
        return mean[:, None, :, None, None].expand(P, N, 3, K, K)


class BlurSampler(Sampler):
    """Normalised convolution: blur(x · m) / blur(m) on the hole, m = the known ring, σ = ``sigma``
    (grey 0.5 where the blurred mask vanishes)."""

    deterministic = True

    def __init__(self, K, device, sigma: Optional[float] = None):
        super().__init__(K, device)
        self.sigma = float(sigma) if sigma is not None else K / 2.0

    def fill(self, neigh, known, draws, N):
        K = self.K
        m = self._known(neigh, known)
        num = _blur(neigh * m, self.sigma)
        den = _blur(m, self.sigma)
        out = torch.where(den > 1e-6, num / den.clamp_min(1e-6), torch.full_like(num, 0.5))
        out = out[:, :, K : 2 * K, K : 2 * K].clamp(0, 1)
        return out[:, None].expand(-1, N, -1, -1, -1)

    def describe(self):
        return {"sigma": self.sigma}


class NoiseSampler(Sampler):
    def draws(self, P, N, generator):
        K = self.K
        return reference("noise", torch.empty(P, N, 3, K, K, device=self.device), generator=generator)

    def fill(self, neigh, known, draws, N):
        return draws


class GaussianSampler(Sampler):
    def __init__(self, K, device, key: str):
        super().__init__(K, device)
        self.path = find_fitted("gaussian", key, K)
        self.model = load_gaussian(str(self.path), str(device))
        self.channels = self.model.channels

    def draws(self, P, N, generator):
        d = self.model.stats["L"].shape[0]
        return torch.randn(P, N, d, generator=generator, device=generator.device).to(self.device)

    def fill(self, neigh, known, draws, N):
        K, C = self.K, self.channels
        flat = self.model.flat(neigh)
        z = torch.empty(flat.shape[0], N, draws.shape[-1], dtype=flat.dtype, device=flat.device)
        for rows, (S, A, L, offset) in self.model.given(self._known(neigh, known)[:, 0]):
            mean = offset + flat[rows][:, S] @ A.T  # μ_a|S
            z[rows] = mean[:, None, :] + draws[rows] @ L.T  # (n, N, Da)
        out = z.clamp(0, 1).view(flat.shape[0], N, C, K, K)
        return out.expand(-1, -1, 3, -1, -1) if C == 1 else out

    def describe(self):
        return {"path": str(self.path)}


class PatchSampler(Sampler):
    """The fitted PatchSampler; ``temperature`` < 1 sharpens its draws (ours: ``PatchSamplerNet.sample``)."""

    def __init__(self, K, device, key: str, temperature: float = TEMPERATURE):
        super().__init__(K, device)
        self.path = find_fitted("patchsampler", key, K)
        self.net = load_patchsampler(str(self.path), str(device))
        self.channels = self.net.channels
        self.temperature = float(temperature)

    def draws(self, P, N, generator):
        K, C = self.K, self.channels
        return torch.rand(P, N, 1 + C, K, K, generator=generator, device=generator.device).to(self.device)

    @torch.no_grad()
    def fill(self, neigh, known, draws, N):
        # one trunk forward per patch; the light head draws each of the N in-fills group by group
        P, C, K = neigh.shape[0], self.channels, self.K
        t = self.net.trunk(self.net.to_input(neigh).float(), self._known(neigh, known).float())
        levels = self.net.sample(t.repeat_interleave(N, dim=0), draws.reshape(P * N, 1 + C, K, K).float(), self.temperature)
        out = levels.view(P, N, C, K, K).to(neigh.dtype) / (LEVELS - 1)
        return out.expand(-1, -1, 3, -1, -1) if C == 1 else out

    def describe(self):
        return {"path": str(self.path), "temperature": self.temperature}


def make_sampler(
    name: str,
    K: int,
    device: torch.device,
    key: str = "photos",
    value: float = 0.5,
    sigma: Optional[float] = None,
    temperature: float = TEMPERATURE,
) -> Sampler:
    """The sampler called ``name`` for patch size K; ``key`` picks fitted files (see ``sampler_key``);
    ``temperature`` is the PatchSampler's (the others ignore it)."""
    if name == "patchsampler":
        return PatchSampler(K, device, key, temperature)
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
            K, (h, w) = self.sampler.K, self.x01.shape[-2:]
            neigh = neighbourhoods(self.x01, self.y0[sl], self.x0[sl], K)
            kn = known(h, w, self.y0[sl], self.x0[sl], K, self.x01.device)
            draws = self.sampler.draws(neigh.shape[0], self.N, gen)
            self._cache[c] = self.sampler.fill(neigh, kn, draws, self.N).to(self.x01.dtype)
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
    temperature: float = TEMPERATURE,
) -> dict[str, np.ndarray]:
    """A look inside (the paper's Fig. 14): N in-fills of one patch and the neighbourhood they see.

    ``clf_or_key`` is a classifier (its fitted samplers and device are used) or a data key
    (``shapes``, ``digits``, ``photos`` or a folder). ``x01`` is (3, H, W) or (1, 3, H, W) in
    [0, 1]; ``patch_xy`` = (x0, y0) is the patch's top-left corner. Returns numpy arrays:
    ``neighbourhood`` (3, 3K, 3K), ``hole`` (3K, 3K) bool, ``infills`` (N, 3, K, K) and
    ``filled`` (N, 3, 3K, 3K) = the neighbourhood with each in-fill pasted in, and ``known``
    (3K, 3K) bool = the pixels the sampler read (zero-padded ones outside the image are not).
    ``temperature``: the PatchSampler's (default ``TEMPERATURE``; 1 = the fitted model as it is).
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
    s = make_sampler(sampler, K, device, key, value, sigma, temperature)
    y0 = torch.tensor([py], device=device)
    x0 = torch.tensor([px], device=device)
    fills = InFills(s, x, y0, x0, N, seed).all()[0]  # (N, 3, K, K)
    neigh = neighbourhoods(x, y0, x0, K)[0]
    filled = neigh[None].repeat(N, 1, 1, 1)
    filled[:, :, K : 2 * K, K : 2 * K] = fills
    return {
        "neighbourhood": neigh.cpu().numpy(),
        "hole": (hole_mask(K) == 0).numpy(),
        "known": known(h, w, y0, x0, K, device)[0, 0].bool().cpu().numpy(),
        "infills": fills.cpu().numpy(),
        "filled": filled.cpu().numpy(),
    }
