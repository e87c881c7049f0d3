"""Streaming least squares for the inverses (Eq. 5–7), in closed form.

- dense layer: ``g(S) = W S + b``, ridge-regularised (Eq. 6),
  ``W = Cov(X, S) (Cov(S, S) + λ I)^-1``, ``b = E X − W E S``;
- global average pooling (ResNet-style heads, not in the paper's list): one weight per
  (channel, position), ``X[c, i, j] ≈ w[c, i, j] S[c] + b[c, i, j]`` — Eq. 6 restricted to the
  connections of the forward layer, with the same λ;
- convolution: a transposed convolution with the forward layer's shape whose kernel and bias are
  fitted by least squares (Eq. 7), through the normal equations over the "transposed patches" of
  ``S`` (:func:`conv_patches`), not by SGD.

Eq. 6 writes ``X̄ S̄ᵀ (S̄ S̄ᵀ + λ I)^-1`` with centred data matrices; we use covariances (sums
divided by N), so that λ = 0.001 means the same thing whatever the number of samples and the
statistics can be accumulated in a stream; without λ it is the same solution. Dense inverses keep
the eigen-decomposition ``Cov(S, S) = U diag(e) Uᵀ`` and ``P = Cov(X, S) U``, so the ridge is
re-solved for any λ at once: ``W(λ) = P diag(1/(e + λ)) Uᵀ`` (:func:`solve_dense`).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ...errors import ExplainerError


class Moments:
    """Streamed centred moments for the regression ``X ≈ W S + b`` (rows are samples).

    Kept in float64: ``n``, ``mx`` = E X, ``ms`` = E S, ``css`` = Σ (S − ms)(S − ms)ᵀ,
    ``cxs`` = Σ (X − mx)(S − ms)ᵀ and ``sxx`` = Σ (X − mx)² per entry of X (for the R² of a
    solution, :func:`explained`). Batches are merged with the pairwise update of Chan et al., so
    any split of the data into batches gives the same result as one big batch.

    ``diag=True``: X is (n, c, q) and S (n, c) — one scalar regression per (channel, position)
    with the channel's S (the global-pooling inverse); ``css`` is then (c,) and ``cxs`` (c, q).
    """

    def __init__(self, dx, ds: int, device: torch.device | str = "cpu", diag: bool = False):
        self.diag = diag
        self.n = 0
        f64 = dict(dtype=torch.float64, device=device)
        if diag:
            c, q = dx
            self.mx, self.ms = torch.zeros(c, q, **f64), torch.zeros(c, **f64)
            self.css, self.cxs = torch.zeros(c, **f64), torch.zeros(c, q, **f64)
        else:
            self.mx, self.ms = torch.zeros(dx, **f64), torch.zeros(ds, **f64)
            self.css, self.cxs = torch.zeros(ds, ds, **f64), torch.zeros(dx, ds, **f64)
        self.sxx = torch.zeros_like(self.mx)

    def update(self, X: torch.Tensor, S: torch.Tensor) -> None:
        nb = int(X.shape[0])
        if nb == 0:
            return
        # batch-centred products in the data's precision (float32 GEMMs), accumulated in float64
        bx, bs = X.mean(0), S.mean(0)
        Xc, Sc = X - bx, S - bs
        if self.diag:
            css_b = (Sc * Sc).sum(0)
            cxs_b = (Xc * Sc[:, :, None]).sum(0)
        else:
            css_b = Sc.T @ Sc
            cxs_b = Xc.T @ Sc
        sxx_b = (Xc * Xc).sum(0)
        bx, bs = bx.double(), bs.double()
        n = self.n + nb
        dx, ds = bx - self.mx, bs - self.ms
        f = self.n * nb / n
        if self.diag:
            self.css += css_b.double() + f * ds * ds
            self.cxs += cxs_b.double() + f * dx * ds[:, None]
        else:
            self.css += css_b.double() + f * torch.outer(ds, ds)
            self.cxs += cxs_b.double() + f * torch.outer(dx, ds)
        self.sxx += sxx_b.double() + f * dx * dx
        self.mx += dx * (nb / n)
        self.ms += ds * (nb / n)
        self.n = n

    def covariances(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(Cov(S, S), Cov(X, S)): the sums divided by n (see the module's note on Eq. 6)."""
        if self.n == 0:
            raise ExplainerError("mipin: no samples to fit on")
        return self.css / self.n, self.cxs / self.n


def _inv_eig(e: torch.Tensor, lam: float) -> torch.Tensor:
    """1/(e + λ) with the pseudo-inverse's cut for λ = 0 (directions of ~zero variance get 0)."""
    e = e.clamp_min(0)
    d = e + lam
    tol = e.max().clamp_min(1e-300) * e.shape[-1] * torch.finfo(e.dtype).eps if e.numel() else 0.0
    return torch.where(d > tol, 1.0 / d.clamp_min(1e-300), torch.zeros_like(d))


def eig_stats(m: Moments) -> dict[str, torch.Tensor]:
    """What a dense inverse keeps for re-solving at any λ: ``U``, ``e`` (Cov(S,S) = U diag(e) Uᵀ),
    ``P`` = Cov(X, S) U, and the means ``mx``, ``ms``."""
    css, cxs = m.covariances()
    css = 0.5 * (css + css.T)
    e, U = torch.linalg.eigh(css)
    return {"P": cxs @ U, "U": U, "e": e, "mx": m.mx.clone(), "ms": m.ms.clone()}


def solve_dense(P, U, e, mx, ms, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 6 from the stored statistics: ``W = P diag(1/(e+λ)) Uᵀ`` = Cov(X,S)(Cov(S,S)+λI)^-1,
    ``b = E X − W E S``. Works on stacks (leading class axis) too."""
    P, U, e, mx, ms = (t.double() for t in (P, U, e, mx, ms))
    W = (P * _inv_eig(e, lam).unsqueeze(-2)) @ U.transpose(-1, -2)
    b = mx - (W @ ms.unsqueeze(-1)).squeeze(-1)
    return W, b


def ridge_inverse(m: Moments, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 6 directly from moments (W, b) — dense or, with ``diag``, the global-pooling inverse."""
    if m.diag:
        css, cxs = m.covariances()
        w = cxs * _inv_eig(css, lam)[:, None]
        return w, m.mx - w * m.ms[:, None]
    st = eig_stats(m)
    return solve_dense(st["P"], st["U"], st["e"], st["mx"], st["ms"], lam)


def solve_diag(cxs, css, mx, ms, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The global-pooling inverse from stored statistics (stacks with a leading class axis too)."""
    cxs, css, mx, ms = (t.double() for t in (cxs, css, mx, ms))
    w = cxs * _inv_eig(css, lam).unsqueeze(-1)
    return w, mx - w * ms.unsqueeze(-1)


def conv_padded(S: torch.Tensor, st_hp: tuple) -> torch.Tensor:
    """The transposed convolution as a correlation: insert stride−1 zeros between the entries of
    ``S`` (B, C_out, H', W') and pad by k−1−p (plus the output padding at the bottom/right), so that
    ``conv_transpose2d(S, K, stride, padding, output_padding) == conv2d(conv_padded(S), flip(K)ᵀ)``."""
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = st_hp
    B, C, H, W = S.shape
    if (sh, sw) != (1, 1):
        Z = S.new_zeros(B, C, (H - 1) * sh + 1, (W - 1) * sw + 1)
        Z[:, :, ::sh, ::sw] = S
        S = Z
    return F.pad(S, (kw - 1 - pw, kw - 1 - pw + ow, kh - 1 - ph, kh - 1 - ph + oh))


def conv_patches(S: torch.Tensor, st_hp: tuple, positions: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The regressors of Eq. 7: for each position of X, the transposed patch of S it is rebuilt
    from, ordered (C_out, kh, kw): (B, C_out·kh·kw, P). ``positions`` (B, P) picks flat positions
    of X per sample (None: all H·W, through ``F.unfold``)."""
    (kh, kw) = st_hp[0]
    Sp = conv_padded(S, st_hp)
    if positions is None:
        return F.unfold(Sp, (kh, kw))
    B, C, Hp, Wp = Sp.shape
    Wx = Wp - kw + 1
    ys, xs = positions // Wx, positions % Wx
    flat = Sp.reshape(B, C, Hp * Wp)
    cols = []
    for u in range(kh):
        for v in range(kw):
            idx = ((ys + u) * Wp + (xs + v))[:, None, :].expand(B, C, positions.shape[1])
            cols.append(torch.gather(flat, 2, idx))
    return torch.stack(cols, dim=2).reshape(B, C * kh * kw, positions.shape[1])


def solve_conv(m: Moments, st_hp: tuple, c_out: int, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 7 in closed form: regress X (per input channel) on the transposed patches of S; return
    the ``conv_transpose2d`` kernel (C_out, C_in, kh, kw) and bias (C_in,)."""
    Kf, b = ridge_inverse(m, lam)  # (C_in, C_out*kh*kw): a conv2d kernel on conv_padded(S)
    return conv_kernel(Kf, st_hp, c_out), b


def conv_kernel(Kf: torch.Tensor, st_hp: tuple, c_out: int) -> torch.Tensor:
    """The regression's weights (C_in, C_out·kh·kw), a correlation kernel on :func:`conv_padded`,
    as the ``conv_transpose2d`` kernel (C_out, C_in, kh, kw)."""
    (kh, kw) = st_hp[0]
    return Kf.reshape(-1, c_out, kh, kw).flip(-1, -2).transpose(0, 1).contiguous()



def explained(m: Moments, W: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """How well ``X ≈ W S + b`` fits the samples summarised by ``m`` (e.g. held-out ones), from
    the moments alone: ``(sse, sst)`` = (Σ ‖X − W S − b‖², Σ ‖X − E X‖²), both per sample, so
    that R² = 1 − sse / sst and sums over classes or layers pool correctly. ``W``, ``b`` as
    :func:`ridge_inverse` returns them (dense, or the ``diag`` per-channel form)."""
    if m.n == 0:
        raise ExplainerError("mipin: no samples to measure the fit on")
    css, cxs = m.covariances()
    W, b = W.double(), b.double()
    if m.diag:
        cross = (W * cxs).sum() * 2 - (W * W * css[:, None]).sum()
        offset = m.mx - W * m.ms[:, None] - b
    else:
        cross = (W * cxs).sum() * 2 - ((W @ css) * W).sum()
        offset = m.mx - W @ m.ms - b
    sst = float(m.sxx.sum() / m.n)
    return max(sst - float(cross) + float((offset * offset).sum()), 0.0), sst
