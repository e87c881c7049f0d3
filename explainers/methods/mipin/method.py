"""MIP-IN as a method: :func:`explain_batch` (maps, source signals and their logits for a
batch), :func:`run` (one image, with the per-layer signals for the page) and its registration.

The map is the length of the attribution ``A_0`` over the input channels (the network's
normalised input: a reconstruction of the pixels, whose sign per channel is a colour direction,
not evidence); for a classifier-module inversion it is the signed channel mean of ``A_0``
(non-negative features: more or less of a feature), resized bilinearly to the input size, like
Grad-CAM (Section 6.1). See the package docstring.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...classifiers.base import Classifier
from ...core import MethodOutput, MethodSpec, register
from .config import MIPINConfig
from .inverse import invert
from .plan import Plan, Record, forward_from_x0, forward_record, get_plan
from ...errors import ExplainerError
from .store import choose_fit, data_free_eligible, data_free_params, solved_params


def _to_map(clf: Classifier, plan: Plan, a: torch.Tensor, magnitude: bool = True) -> torch.Tensor:
    """(B, *x0) attribution at X_0 -> (B, H, W) map: at the input pixels (whole network) the
    length of the attribution over the input channels (``magnitude=False``: the signed channel
    sum, for the source signal's display); on features (classifier module) the signed channel
    mean, resized bilinearly (Section 6.1)."""
    B = a.shape[0]
    a = a.reshape(B, *plan.x0_shape)
    if plan.scope == "network":
        if magnitude:
            return a.norm(dim=1) if a.dim() == 4 else a.abs().reshape(B, *clf.input_size)
        return a.sum(1) if a.dim() == 4 else a.reshape(B, *clf.input_size)
    if a.dim() == 2:  # a flat X_0 (no spatial features): nothing to localise
        a = a[:, :, None, None]
    m = a.mean(1, keepdim=True)
    # "resize to original image size ... similar to Grad-CAM" (Section 6.1.2; no mode given): bilinear,
    # as Grad-CAM's implementations do (bicubic / nearest moved efficientnet-lite0's drop by < 0.05)
    return F.interpolate(m, size=tuple(clf.input_size), mode="bilinear", align_corners=False)[:, 0]


def _layer_summary(st_shape: tuple, s: torch.Tensor) -> np.ndarray:
    s = s.reshape(st_shape)
    if s.dim() == 3 and s.shape[1] * s.shape[2] > 1:  # a feature map: its channel mean
        return s.mean(0).float().cpu().numpy()
    return s.reshape(-1).float().cpu().numpy()


def explain_batch(
    clf: Classifier, x01: torch.Tensor, targets: Sequence[int], cfg: MIPINConfig = MIPINConfig(), keep_layers: bool = False
) -> dict[str, Any]:
    """MIP-IN for a batch (one target per image): maps (B, H, W), source signals S_0, their
    logits and the inputs' logits (B, n_classes), and (``keep_layers``) the inverted signals."""
    plan = get_plan(clf)
    targets = [int(t) for t in targets]
    B = x01.shape[0]
    with torch.no_grad():
        xn = clf.normalize(x01.to(clf.device))
        rec = forward_record(clf.net, plan, xn)
        S0 = torch.zeros(B, *plan.stages[0].in_shape, device=clf.device)
        A0 = torch.zeros_like(S0)
        layers: list = [None] * B
        for c in sorted(set(targets)):
            fit = _fit_or_none(clf, plan, cfg, c)
            params = solved_params(fit, c, cfg.lam) if fit is not None else data_free_params(clf, plan, c)
            sel = [i for i, t in enumerate(targets) if t == c]
            sub = _select(rec, sel)
            S, A, lay = invert(plan, params, sub, sub.logits[:, c][None], cfg.forward_relu, keep=keep_layers)
            S0[sel], A0[sel] = S[0], A[0]
            if keep_layers:
                for j, i in enumerate(sel):
                    layers[i] = [t[0, j] for t in lay]
        maps = _to_map(clf, plan, A0)
        if plan.scope == "network":
            src_logits = clf.net(S0.reshape(B, *plan.input_shape))
        else:
            src_logits = forward_from_x0(clf.net, plan, S0.reshape(B, *plan.x0_shape), keep=False).logits
    return {"maps": maps, "source": S0.reshape(B, *plan.x0_shape), "attribution_x0": A0.reshape(B, *plan.x0_shape),
            "source_logits": src_logits.float(), "logits": rec.logits.float(), "layers": layers, "plan": plan}


def _fit_or_none(clf: Classifier, plan: Plan, cfg: MIPINConfig, target: int):
    """The fit for ``target``, or None where there is none and the data-free inverse applies."""
    try:
        return choose_fit(clf, cfg, target)
    except ExplainerError as e:
        if cfg.data_free and not cfg.fit and data_free_eligible(plan) and "no fitted inverses" in str(e):
            return None
        raise


def _select(rec: Record, sel: list[int]) -> Record:
    idx = torch.as_tensor(sel, device=rec.logits.device)
    return Record([x[idx] for x in rec.xs], {k: v[idx] for k, v in rec.switches.items()}, rec.logits[idx])


def source_image(clf: Classifier, plan: Plan, s0: torch.Tensor) -> np.ndarray:
    """The source signal for display: in pixel space (H, W, 3), un-normalised but not clipped, for
    a whole-network inversion; the channel mean resized to the input (H, W) for a classifier module."""
    if plan.scope == "network" and len(plan.x0_shape) == 3:
        c = plan.x0_shape[0]
        mean = torch.tensor(clf.mean[:c], device=s0.device).view(c, 1, 1)
        std = torch.tensor(clf.std[:c], device=s0.device).view(c, 1, 1)
        px = s0 * std + mean
        if c == 1:
            px = px.expand(3, -1, -1)
        return px.permute(1, 2, 0).float().cpu().numpy()
    return _to_map(clf, plan, s0[None], magnitude=False)[0].float().cpu().numpy()


def run(clf: Classifier, x01: torch.Tensor, target: int, cfg: MIPINConfig, progress: Optional[Callable] = None) -> MethodOutput:
    out = explain_batch(clf, x01, [target], cfg, keep_layers=True)
    plan: Plan = out["plan"]
    fit = _fit_or_none(clf, plan, cfg, target)
    extras: dict[str, Any] = {
        "source": out["source"][0].float().cpu().numpy(),
        "source_image": source_image(clf, plan, out["source"][0]),
        "source_logits": out["source_logits"][0].cpu().numpy(),
        "logits": out["logits"][0].cpu().numpy(),
        "attribution_x0": out["attribution_x0"][0].float().cpu().numpy(),
        "layer_names": [],
    }
    layers = out["layers"][0]
    L = len(plan.stages)
    for j, s in enumerate(layers):  # S_k for k = L-1 .. 0
        k = L - 1 - j
        st = plan.stages[k]
        name = "X_0 (input)" if k == 0 and plan.scope == "network" else (
            "X_0 (top conv features)" if k == 0 else f"X_{k}: output of {plan.stages[k - 1].label}")
        extras["layer_names"].append(name)
        extras[f"layer.{len(extras['layer_names']) - 1}"] = _layer_summary(st.x_shape, s)
    unit = "input units" if plan.scope == "network" else "feature units"
    meta = {
        "amortised": True,
        "scope": plan.scope,
        "fit": fit.path if fit is not None else "data-free: the top layer's minimum-norm inverse (no fit)",
        "fitted_lam": fit.lam if fit is not None else None,
        "resolved": fit is not None and not math.isclose(cfg.lam, fit.lam, rel_tol=1e-12),
        "unit": unit,
        "units": {"attribution": unit},
        # what the map's values are (the pages' captions): unsigned at the pixels, signed on features
        "map": ("length of the attribution over the input channels (≥ 0)" if plan.scope == "network"
                else "channel mean of the attribution (signed), resized"),
        "source_logit": float(out["source_logits"][0, target]),
        "logit": float(out["logits"][0, target]),
    }
    return MethodOutput({"attribution": out["maps"][0]}, extras=extras, meta=meta)


register(
    MethodSpec(
        name="mipin",
        title="MIP-IN (mutual-information-preserving inverse network)",
        config=MIPINConfig,
        run=run,
        maps={"attribution": "signed"},
        units={"attribution": "input units"},
        paper="004_ac7769c5886fab98",
        needs_fit=True,
    )
)
