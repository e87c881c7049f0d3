"""The soft-TV Gaussian prior of VarSal (paper 002, Eq. 4, 6, 7 and Appendix B, D).

The prior over a saliency map ``S`` (h x w) is ``N(vec(S); 0, Σ)`` with ``Σ = K_h ⊗ K_w`` (Eq. 6),
where ``K_n`` is the n x n tridiagonal matrix with 1 on the diagonal and ``α`` on the first
diagonals above and below. Hence ``Σ`` is 1 on the diagonal, ``α`` between 4-neighbours and ``α²``
between diagonal neighbours (Eq. 4, Fig. 9).

Conventions: maps are (…, h, w) tensors and ``vec`` is row-major, ``vec(S)[i·w + j] = S[i, j]``,
so ``Σ[(i, j), (i', j')] = K_h[i, i'] · K_w[j, j']``. (The paper stacks columns, giving
``rsh(b) ∈ R^{w×h}``; the two conventions are transposes of each other and give the same numbers.)

Nothing here ever builds the hw x hw matrix: every term goes through the h x h and w x w factors.
``K_n`` is a symmetric tridiagonal Toeplitz matrix whose eigen-decomposition is known in closed form
(the discrete sine transform): eigenvalues ``λ_k = 1 + 2α cos(kπ/(n+1))`` and orthonormal
eigenvectors ``U[j, k] = sqrt(2/(n+1)) sin(jkπ/(n+1))``, k, j = 1..n. So ``K_n`` is positive
definite iff ``|α| < 1 / (2 cos(π/(n+1)))``, which holds for every n iff ``|α| <= 1/2``
(α = 1/2 itself is PD for every finite n but ill-conditioned); we accept ``0 <= α < 0.5``.
α = 0 is the standard Gaussian prior N(0, I) of the paper's ablation (Fig. 3).
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import numpy as np
import torch

from ..errors import ExplainerError

ALPHA_MAX = 0.5  # exclusive: K_n is PD for every n iff α < 1/2 (see the module docstring)


def check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not (0.0 <= a < ALPHA_MAX) or not math.isfinite(a):
        raise ExplainerError(f"alpha must be in [0, {ALPHA_MAX}) for the soft-TV prior to be a valid covariance, got {alpha}")
    return a


@functools.lru_cache(maxsize=64)
def _factor64(n: int, alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(eigenvalues λ (n,), eigenvectors U (n, n), K_n) of the tridiagonal factor, float64 on the CPU."""
    k = torch.arange(1, n + 1, dtype=torch.float64)
    lam = 1.0 + 2.0 * alpha * torch.cos(k * math.pi / (n + 1))
    U = math.sqrt(2.0 / (n + 1)) * torch.sin(torch.outer(k, k) * math.pi / (n + 1))
    K = tridiagonal(n, alpha, dtype=torch.float64)
    return lam, U, K


def tridiagonal(n: int, alpha: float, device: Optional[torch.device] = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``K_n``: 1 on the diagonal, ``alpha`` on the first off-diagonals (Eq. 6, Fig. 9)."""
    K = torch.eye(n, dtype=dtype, device=device)
    if n > 1:
        idx = torch.arange(n - 1, device=device)
        K[idx, idx + 1] = alpha
        K[idx + 1, idx] = alpha
    return K


@functools.lru_cache(maxsize=64)
def _factors(n: int, alpha: float, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Everything the KL needs about ``K_n``: its inverse, the diagonal of the inverse, log det.

    Computed once per (n, α, device, dtype) in float64 from the closed-form eigen-decomposition,
    then cast. The cached tensors are never modified by callers.
    """
    lam, U, K = _factor64(n, alpha)
    inv = (U / lam) @ U.T  # K^{-1} = U diag(1/λ) Uᵀ
    inv = 0.5 * (inv + inv.T)
    return {
        "K": K.to(device=device, dtype=dtype),
        "inv": inv.to(device=device, dtype=dtype),
        "inv_diag": torch.diagonal(inv).clone().to(device=device, dtype=dtype),
        "logdet": torch.log(lam).sum().to(device=device, dtype=dtype),
        "sqrt": ((U * lam.sqrt()) @ U.T).to(device=device, dtype=dtype),  # symmetric square root K^{1/2}
    }


def factors(n: int, alpha: float, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    return _factors(int(n), check_alpha(alpha), torch.device(device), dtype)


def kl_to_prior(mu: torch.Tensor, log_nu: torch.Tensor, alpha: float) -> torch.Tensor:
    """``KL(N(vec μ, diag ν) || N(0, K_h ⊗ K_w))`` for maps (…, h, w); returns shape (…).

    Eq. 8 of Appendix D with every term through the Kronecker factors (Eq. 9–11):

    - ``tr(Σ⁻¹ diag ν) = diag(K_h⁻¹)ᵀ · V · diag(K_w⁻¹)`` (Eq. 9, row-major form),
    - ``μᵀ Σ⁻¹ μ = sum(M ⊙ (K_h⁻¹ M K_w⁻¹))`` (Eq. 10; K⁻¹ is symmetric),
    - ``log det Σ = w · log det K_h + h · log det K_w`` (Eq. 11),

    ``KL = ½ (tr + quad − hw + log det Σ − Σ log ν)``. The paper's Eq. 7/12 drops the constants
    (``−hw`` and ``log det Σ``); we keep them so the value is the exact KL (tested against a
    dense ``torch.distributions.MultivariateNormal``); the gradients are the same.
    """
    if mu.shape != log_nu.shape or mu.dim() < 2:
        raise ValueError("mu and log_nu must have the same shape (..., h, w)")
    h, w = mu.shape[-2:]
    fh = factors(h, alpha, mu.device, mu.dtype)
    fw = factors(w, alpha, mu.device, mu.dtype)
    nu = log_nu.exp()
    trace = torch.einsum("...ij,i,j->...", nu, fh["inv_diag"], fw["inv_diag"])  # Eq. 9
    quad = (mu * (fh["inv"] @ mu @ fw["inv"])).sum(dim=(-2, -1))  # Eq. 10
    logdet = w * fh["logdet"] + h * fw["logdet"]  # Eq. 11
    return 0.5 * (trace + quad - h * w + logdet - log_nu.sum(dim=(-2, -1)))


def optimal_log_variance(h: int, w: int, alpha: float, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The variance map that minimises the KL to the prior for a factorised q: ``ν = 1 / diag(Σ⁻¹)``.

    ``∂KL/∂ν_ij = ½ (diag(K_h⁻¹)_i diag(K_w⁻¹)_j − 1/ν_ij) = 0``. Used to start the per-image
    optimisation at the prior's best mean-field fit (about 0.36 inside the image for α = 0.4).
    """
    fh = factors(h, alpha, device, dtype)
    fw = factors(w, alpha, device, dtype)
    return -torch.log(torch.outer(fh["inv_diag"], fw["inv_diag"]))


def sample_prior(h: int, w: int, alpha: float, n: int, generator: Optional[torch.Generator] = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """``n`` maps (n, h, w) drawn from ``N(0, K_h ⊗ K_w)``: ``S = K_h^{1/2} Z K_w^{1/2}`` with Z i.i.d. N(0, 1).

    (Row-major: ``vec(A Z B) = (A ⊗ Bᵀ) vec(Z)``, so ``Cov = K_h ⊗ K_w``.)
    """
    fh = factors(h, alpha, device)
    fw = factors(w, alpha, device)
    gdev = generator.device if generator is not None else torch.device(device)
    z = torch.randn((n, h, w), generator=generator, device=gdev).to(device)
    return fh["sqrt"] @ z @ fw["sqrt"]


def prior_picture(h: int, w: int, alpha: float, n_samples: int = 3, seed: int = 0, small: int = 5) -> dict[str, np.ndarray]:
    """Numbers for the page's picture of the prior (all float32 numpy):

    - ``covariance_row``: Σ[centre, ·] as an h x w image — 1 at the centre pixel, α at its
      4-neighbours, α² at its diagonal neighbours, 0 elsewhere (one row of Σ, Eq. 4 / Fig. 9a);
    - ``covariance_small``: the whole Σ = K_s ⊗ K_s for a small s x s map (s² x s², Fig. 9b);
    - ``samples``: ``n_samples`` maps (n, h, w) drawn from N(0, Σ) with a seeded generator.
    """
    fh = factors(h, alpha)
    fw = factors(w, alpha)
    ci, cj = h // 2, w // 2
    row = torch.outer(fh["K"][ci], fw["K"][cj])  # Σ[(ci, cj), (i, j)] = K_h[ci, i] K_w[cj, j]
    ks = factors(small, alpha)["K"]
    gen = torch.Generator().manual_seed(int(seed))
    samples = sample_prior(h, w, alpha, n_samples, generator=gen)
    return {
        "covariance_row": row.numpy().astype(np.float32),
        "covariance_small": torch.kron(ks, ks).numpy().astype(np.float32),
        "samples": samples.numpy().astype(np.float32),
    }
