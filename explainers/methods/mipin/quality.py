"""How well the inverses reconstruct their layers' inputs (Eq. 5): R² from streamed statistics.

R² of layer k is ``1 − Σ ‖X_k − g_k(S_{k+1})‖² / Σ ‖X_k − mean X_k‖²`` before the forward-ReLU
gate, every entry of X_k (neuron) against its own mean, pooled over the classes fitted (one
inverse network per class, Algorithm 1). The fitter measures it on its training images and on
held-out ones (``explainers/training/mipin.py``) and keeps it in the fit's card (``layers``,
``summary``).

- :class:`ConvMoments`: a convolution's regression moments (one row per sampled position) with
  per-entry sums of its input (the moments only know the mean per channel);
- :class:`Residuals`: the squared error of an inverse that is not fitted (the pooling layers');
- :func:`pooled_r2` (fitted layers, from moments and the solutions), :func:`residual_r2`;
- :func:`solve_layer`: a fitted layer's solution and these facts (the ridge of a convolution
  measured over ``CONV_LAMS`` on the held-out images, and chosen there when not given);
- :func:`summary`: one line per layer, from a card.
"""
from __future__ import annotations

from typing import Optional

import torch

from .lstsq import Moments, conv_kernel, eig_stats, explained, solve_dense
from .plan import Stage

CONV_LAMS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # the ridges of a convolution measured on held-out images
CONV_LAM_FALLBACK = 0.1  # a ridge to choose but no held-out images


class Entries:
    """Per-entry sums of a layer's input over images: Σ ‖X − mean X‖² with every entry's own mean."""

    def __init__(self):
        self.n, self.sx, self.sxx = 0, 0.0, 0.0

    def track(self, X: torch.Tensor) -> None:
        """Add a batch ``X`` (B, entries)."""
        X = X.double()
        self.n += X.shape[0]
        self.sx = self.sx + X.sum(0)
        self.sxx = self.sxx + (X * X).sum(0)

    def sst(self) -> float:
        """Σ over entries of the variance (per image)."""
        return float((self.sxx / self.n - (self.sx / self.n) ** 2).sum())


class Residuals(Entries):
    """Σ ‖X − g(S)‖² of an inverse read off the forward pass (no fit), and X's sums."""

    def __init__(self):
        super().__init__()
        self.sse = 0.0

    def update(self, X: torch.Tensor, G: torch.Tensor) -> None:
        """Add a batch: the layer input ``X`` and its reconstruction ``G``, both (B, entries)."""
        self.sse += float(((X.double() - G.double()) ** 2).sum())
        self.track(X)


class ConvMoments(Moments):
    """A convolution's moments (one row per sampled position: ``rows`` positions per map) and its
    input's per-entry sums (``entries``, tracked once per image)."""

    def __init__(self, *args, rows: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.rows, self.entries = rows, Entries()


def pooled_r2(moments: Optional[list], solutions: list) -> Optional[float]:
    """R² of a fitted layer, pooled over classes (``moments[c]``, ``solutions[c]`` = (W, b));
    None without samples. A convolution's squared error per sampled position is scaled to the
    whole map (exact when every position is used); its per-entry sums live in ``moments[0]``."""
    if not moments:
        return None
    sse = sst = 0.0
    for m, (W, b) in zip(moments, solutions):
        e, t = explained(m, W, b)
        if isinstance(m, ConvMoments):
            e, t = e * m.rows, moments[0].entries.sst()
        sse, sst = sse + e, sst + t
    return 1.0 - sse / sst if sst > 0 else None


def residual_r2(parts: list) -> float:
    """R² of an inverse that is not fitted, pooled over classes (one :class:`Residuals` each)."""
    sst = sum(p.sst() for p in parts)
    return 1.0 - sum(p.sse / p.n for p in parts) / sst if sst > 0 else float("nan")


def solve_layer(st: Stage, acc: list, held: Optional[list], lam: Optional[float]) -> tuple[dict, dict]:
    """A fitted layer (dense or convolution) from its moments per class ``acc``: the stored
    statistics (dense: for re-solving at any λ) or solution (convolution), stacked over classes,
    and the facts for the card — its ridge and R² on the training and held-out (``held``) samples.
    A convolution's R² is measured for every ridge in ``CONV_LAMS`` on the held-out samples, and
    ``lam`` None takes the best of them (``CONV_LAM_FALLBACK`` without held-out samples)."""
    facts: dict = {"layer": st.label}
    eig = [eig_stats(m) for m in acc]
    solve = lambda v: [solve_dense(p["P"], p["U"], p["e"], p["mx"], p["ms"], v) for p in eig]  # noqa: E731
    if st.kind == "conv":
        tried = {v: pooled_r2(held, solve(v)) for v in sorted({*CONV_LAMS, *([lam] if lam is not None else [])})} if held else {}
        if tried:  # the trade-off, in every card
            facts["r2_heldout_by_lam"] = {f"{v:g}": round(r, 4) for v, r in tried.items()}
        if lam is None:
            lam = max(tried, key=tried.get) if tried else CONV_LAM_FALLBACK
    sols = solve(lam)
    parts = eig if st.kind == "linear" else [{"K": conv_kernel(W, st.hp, st.out_shape[0]), "b": b} for W, b in sols]
    facts["lam"] = lam
    for key, ms in (("r2_train", acc), ("r2_heldout", held)):
        r = pooled_r2(ms, sols)
        facts[key] = None if r is None else round(r, 4)
    return {name: torch.stack([p[name] for p in parts]) for name in parts[0]}, facts


def summary(card: dict) -> list[str]:
    """One line per layer of a fit's card (top first): held-out and training R², and the ridge."""
    out = []
    for k, f in sorted(card.get("layers", {}).items(), key=lambda kv: -int(kv[0])):
        held = "n/a" if f.get("r2_heldout") is None else f"{f['r2_heldout']:.3f}"
        if "lam" in f:
            how = f", train {f['r2_train']:.3f} (λ {f['lam']:g})"
        else:
            how = " (not fitted: the forward pass's switches/shares)"
        out.append(f"X_{k} <- {f['layer']}: R² held-out {held}{how}")
    return out
