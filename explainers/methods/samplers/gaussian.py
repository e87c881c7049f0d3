"""The conditional Gaussian of Zintgraf et al.'s PDA (the paper's "C.G." baseline).

A Gaussian over flattened (C, 3K, 3K) neighbourhoods, fitted on crops that lie inside the images,
is conditioned on the KNOWN ring pixels (see ``geometry.known``): all of the ring for a patch
away from the border (precomputed once by the fitter: ``A``, ``L``), the part inside the image
for a border patch (computed from the stored covariance on first use, one solve per border
pattern, and kept). Conditioning on fewer pixels is exactly marginalising the others out, so
nothing outside the image is made up and nothing of the hidden patch is used.
"""
from __future__ import annotations

import functools
import math
import threading
from collections import OrderedDict

import torch

from ... import fitted
from .geometry import hole_mask

PATTERNS_KEPT = 64  # border patterns whose conditionals stay in memory per fitted file


def gaussian_from_moments(mean: torch.Tensor, cov: torch.Tensor, K: int, channels: int, eps: float = 1e-4) -> dict:
    """Precompute p(x_r | ring) for a Gaussian over flattened (C, 3K, 3K) neighbourhoods.

    With a = the patch, b = the ring: μ_a|b = μ_a + Σ_ab Σ_bb⁻¹ (x_b − μ_b) and
    Σ_a|b = Σ_aa − Σ_ab Σ_bb⁻¹ Σ_ba (Schur complement). ``eps`` is added to the diagonal (pixel
    variances are ~0.05; some data has constant regions). Returns tensors ``mu`` (D,),
    ``A`` = Σ_ab Σ_bb⁻¹ (Da, Db), ``L`` = chol(Σ_a|b) (Da, Da) and ``cov`` = the regularised Σ's
    upper triangle, packed row by row (for border patches, which know only part of the ring).
    """
    cov = cov.double() + eps * torch.eye(cov.shape[0], dtype=torch.float64)
    hole = (hole_mask(K) == 0).expand(channels, -1, -1).reshape(-1)
    ia, ib = hole.nonzero()[:, 0], (~hole).nonzero()[:, 0]
    A, L = _condition(cov, ia, ib, eps)
    iu = torch.triu_indices(cov.shape[0], cov.shape[0])
    return {"mu": mean.float(), "A": A.float(), "L": L.float(), "cov": cov[iu[0], iu[1]].float()}


def _condition(cov: torch.Tensor, ia: torch.Tensor, ib: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, L): the regression of dims ``ia`` on dims ``ib`` and the Cholesky factor of the Schur complement."""
    s_ab = cov[ia][:, ib]
    A = torch.linalg.solve(cov[ib][:, ib], s_ab.T).T if len(ib) else s_ab
    cond = cov[ia][:, ia] - A @ s_ab.T
    cond = (cond + cond.T) / 2
    L = torch.linalg.cholesky(cond + eps * torch.eye(len(ia), dtype=cov.dtype, device=cov.device))
    return A, L


def _unpack(packed: torch.Tensor, D: int) -> torch.Tensor:
    iu = torch.triu_indices(D, D, device=packed.device)
    full = torch.zeros(D, D, dtype=torch.float64, device=packed.device)
    full[iu[0], iu[1]] = packed.double()
    return full + full.T - torch.diag(full.diagonal())


class ConditionalGaussian:
    """A fitted Gaussian, conditioned on whichever ring pixels a patch knows.

    ``given(known_ring)`` takes a (P, 3K, 3K) 0/1 mask and returns, for each distinct pattern,
    the rows of the patches that have it and (S, A_S, L_S, offset): the flat indices S of the
    known dims, the regression A_S, chol of the conditional covariance, and μ_a − A_S μ_S.
    Patches that know nothing of the ring get the patch's marginal.
    """

    def __init__(self, stats: dict[str, torch.Tensor], cfg: dict):
        self.stats, self.K, self.channels = stats, int(cfg["K"]), int(cfg["channels"])
        self.eps = float(cfg.get("eps", 1e-4))
        K, C = self.K, self.channels
        self.hole = (hole_mask(K, stats["mu"].device) == 0).expand(C, -1, -1).reshape(-1)
        self.ia = self.hole.nonzero()[:, 0]
        self.D = C * (3 * K) ** 2
        self._cov = None
        self._kept: OrderedDict[bytes, tuple] = OrderedDict()
        self._lock = threading.Lock()  # one fitted file is shared by every session

    def _full(self, S: torch.Tensor) -> tuple:
        mu = self.stats["mu"]
        if len(S) == self.D - len(self.ia):  # the whole ring: precomputed by the fitter
            A, L = self.stats["A"], self.stats["L"]
        elif "cov" not in self.stats:  # a fit from before border conditioning: impute the mean
            ib = (~self.hole).nonzero()[:, 0]
            A = self.stats["A"][:, torch.isin(ib, S)]
            L = self.stats["L"]
        else:
            if self._cov is None:
                self._cov = _unpack(self.stats["cov"], self.D)
            A, L = _condition(self._cov, self.ia, S, self.eps)
            A, L = A.float(), L.float()
        offset = mu[self.ia] - A @ mu[S] if len(S) else mu[self.ia]
        return S, A, L, offset

    def given(self, known_ring: torch.Tensor) -> list[tuple[torch.Tensor, tuple]]:
        flat = (known_ring > 0).reshape(known_ring.shape[0], -1)
        pats, inv = torch.unique(flat, dim=0, return_inverse=True)
        out = []
        for i, pat in enumerate(pats):
            key = pat.cpu().numpy().tobytes()
            with self._lock:
                got = self._kept.get(key)
                if got is None:
                    S = (pat.expand(self.channels, -1).reshape(-1) & ~self.hole).nonzero()[:, 0]
                    got = self._kept[key] = self._full(S)
                    while len(self._kept) > PATTERNS_KEPT:
                        self._kept.popitem(last=False)
            out.append(((inv == i).nonzero()[:, 0], got))
        return out

    def flat(self, neigh01: torch.Tensor) -> torch.Tensor:
        """(P, 3, 3K, 3K) RGB -> (P, D) in the Gaussian's channels (grey: the mean of R, G, B)."""
        x = neigh01.mean(dim=1, keepdim=True) if self.channels == 1 else neigh01
        return x.reshape(x.shape[0], -1)

    def log_density(self, neigh01: torch.Tensor, known_ring: torch.Tensor) -> torch.Tensor:
        """ln p(x_a | known ring) (P,), the density over the patch's subpixels in [0, 1] (float64)."""
        flat = self.flat(neigh01).double()
        out = torch.empty(flat.shape[0], dtype=torch.float64, device=flat.device)
        for rows, (S, A, L, offset) in self.given(known_ring):
            mean = offset.double() + flat[rows][:, S] @ A.double().T
            y = torch.linalg.solve_triangular(L.double(), (flat[rows][:, self.ia] - mean).T, upper=False)
            da = len(self.ia)
            out[rows] = -0.5 * (y**2).sum(0) - torch.log(torch.diagonal(L.double())).sum() - 0.5 * da * math.log(2 * math.pi)
        return out


@functools.lru_cache(maxsize=16)
def _load(path: str, device: str, _stamp: tuple) -> ConditionalGaussian:
    tensors, card = fitted.load_fitted(path, device)
    return ConditionalGaussian(tensors, card["config"])


def load_gaussian(path: str, device: str) -> ConditionalGaussian:
    """The fitted conditional Gaussian at ``path`` (loaded once per file version)."""
    return _load(str(path), str(device), fitted.file_digest(path))
