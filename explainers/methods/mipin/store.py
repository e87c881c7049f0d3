"""Fitted inverses: storage (:func:`pack`, :func:`unpack`), loading (:func:`load_fit`), solving
at a λ (:func:`solved_params`) and choosing the fit for a classifier (:func:`choose_fit`).

Fits are made by ``python -m explainers fit --explainer mipin --model ID --data SOURCE``
(``explainers/training/mipin.py``). Dense inverses are stored as statistics and re-solved for
any λ; that is exact for the top layer, lower layers keep the statistics gathered with the fitted
λ above them (a refit with ``--set lam=...`` gathers new ones). Convolution inverses are stored
solved (their ridge, chosen when fitting, is fixed). Pooling inverses store nothing (fits of
version 1 hold a fitted global-pooling inverse as statistics, still read). The card (``.json``)
records the fit's options, data, held-out R² per layer (``layers``, ``summary``) and command.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ... import fitted
from ...classifiers.base import Classifier
from ...errors import ExplainerError
from .config import MIPINConfig
from .lstsq import solve_dense, solve_diag
from .plan import get_plan, net_digest

FIT_NAME = "mipin"
FIT_VERSION = 2
_F16_ABOVE = 1 << 17  # tensors with more entries are stored as float16 (scaled per column)


def pack(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """float32 tensors; large ones as float16 with a float32 scale per column (per 2-D filter for
    conv kernels), which keeps float16's relative precision (~5e-4) without over/underflow."""
    out = {}
    for key, t in state.items():
        t = t.detach().float().cpu().contiguous()
        if t.numel() > _F16_ABOVE and t.dim() >= 2:
            dims = (-2, -1) if t.dim() >= 4 else (-2,)  # conv kernels: one scale per 2-D filter
            scale = t.abs().amax(dim=dims, keepdim=True).clamp_min(1e-30)
            out[key + "@f16"] = (t / scale).half().contiguous()
            out[key + "@scale"] = scale.contiguous()
        else:
            out[key] = t
    return out


def unpack(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, t in tensors.items():
        if key.endswith("@scale"):
            continue
        if key.endswith("@f16"):
            base = key[: -len("@f16")]
            out[base] = t.float() * tensors[base + "@scale"].float()
        else:
            out[key] = t
    return out


@dataclass
class Fit:
    """A loaded fit: stored statistics per stage (stacked over its classes) and its card."""

    path: str
    card: dict
    stats: dict  # k -> {name: tensor (n_classes, ...)}
    classes: list
    device: str = "cpu"

    @property
    def lam(self) -> float:
        return float(self.card["config"]["lam"])

    @property
    def version(self) -> int:
        return int(self.card.get("version", 1))


@functools.lru_cache(maxsize=8)
def _load_fit(path: str, device: str) -> Fit:
    tensors, card = fitted.load_fitted(path, device="cpu")
    tensors = unpack(tensors)
    stats: dict[int, dict] = {}
    for key, t in tensors.items():
        stage, name = key.split(".", 1)
        stats.setdefault(int(stage[1:]), {})[name] = t.to(device)
    return Fit(path, card, stats, [int(c) for c in card["classes"]], device)


def load_fit(path: str | Path, device: torch.device | str = "cpu") -> Fit:
    """A fit, loaded once per (path, device); never mutate it."""
    p = Path(path).expanduser().resolve()
    if not p.exists() or not p.with_suffix(".json").exists():
        raise ExplainerError(f"mipin: no fitted inverses at {p} (needs the .safetensors and the .json beside it)")
    try:
        return _load_fit(str(p), str(torch.device(device)))
    except (KeyError, ValueError, json.JSONDecodeError) as e:
        raise ExplainerError(f"mipin: unreadable fit {p}: {e}") from None


def solve_stage(kind: str, st: dict, lam: float) -> dict[str, torch.Tensor]:
    """A stage's parameters (stacked over classes, float32) from its stored statistics at λ."""
    if kind == "linear":
        W, b = solve_dense(st["P"], st["U"], st["e"], st["mx"], st["ms"], lam)
        return {"W": W.float(), "b": b.float()}
    if kind == "avgpool":
        if "cxs" not in st:  # the forward-activation inverse: nothing fitted
            return {}
        w, b = solve_diag(st["cxs"], st["css"], st["mx"], st["ms"], lam)
        return {"w": w.float(), "b": b.float()}
    if kind == "conv":
        return {"K": st["K"].float(), "b": st["b"].float()}
    return {}


@functools.lru_cache(maxsize=64)
def _solved(path: str, device: str, lam: float, cls: int) -> dict:
    fit = _load_fit(path, device)
    i = fit.classes.index(cls)
    kinds = [s[0] for s in fit.card["plan"]]
    return {k: solve_stage(kind, {n: t[i : i + 1] for n, t in fit.stats.get(k, {}).items()}, lam) for k, kind in enumerate(kinds)}


def solved_params(fit: Fit, cls: int, lam: float) -> dict:
    """Stage parameters for one class (leading axis of size 1), solved at λ and cached."""
    return _solved(fit.path, fit.device, float(lam), int(cls))


def clear_fit_cache() -> None:
    """Forget the loaded fits and their solved parameters (a fit was just written over)."""
    _load_fit.cache_clear()
    _solved.cache_clear()


def fitted_paths(clf: Classifier) -> list[Path]:
    """Candidate fits for ``clf``: the user's first, then the committed one."""
    return fitted.candidates(clf.id, f"{FIT_NAME}.safetensors")


def fit_command(clf: Classifier) -> str:
    data = clf.dataset or "FOLDER"
    return f"python -m explainers fit --explainer mipin --model {clf.id} --data {data}"


def _missing_fit(clf: Classifier, target: Optional[int] = None) -> ExplainerError:
    if clf.dataset:
        how = f"fit them with `{fit_command(clf)}`"
    else:
        how = (f"fit them with `{fit_command(clf)}` where --data is an image folder (one sub-folder per class, "
               "e.g. ImageNet validation images): this model has no built-in dataset")
    which = "" if target is None else f" for class {target}"
    return ExplainerError(f"mipin: no fitted inverses for {clf.id}{which}; {how}")


def choose_fit(clf: Classifier, cfg: MIPINConfig, target: Optional[int] = None) -> Fit:
    """The fit to use for ``clf`` (and ``target``), checked against the network's plan."""
    plan = get_plan(clf)
    paths = [Path(cfg.fit).expanduser()] if cfg.fit else fitted_paths(clf)
    if not paths:
        raise _missing_fit(clf, target)
    fits = [load_fit(p, clf.device) for p in paths]
    digest = net_digest(clf.net)
    stale = []
    for fit in fits:
        if fit.card.get("plan") != plan.signature():
            if cfg.fit:
                raise ExplainerError(f"mipin: the fit {fit.path} was made for another network (layers differ from {clf.id})")
            continue
        if fit.card.get("net_digest") not in (None, digest):
            stale.append(fit.path)
            continue
        if target is None or target in fit.classes:
            return fit
    if stale:
        raise ExplainerError(
            f"mipin: the fit {stale[0]} was made for other weights of {clf.id} (the classifier was retrained); "
            f"refit with `{fit_command(clf)}`"
        )
    if cfg.fit:
        raise ExplainerError(f"mipin: the fit {fits[0].path} has no inverse for class {target} (fitted classes: {fits[0].classes})")
    raise _missing_fit(clf, target)



def data_free_eligible(plan) -> bool:
    """True when the only fitted inverse of ``plan`` would be its top Linear layer (everything below
    is pooling, whose inverses come from the forward pass): then :func:`data_free_params` applies."""
    return plan.scope == "classifier" and all(s.kind in ("avgpool", "maxpool") for s in plan.stages[:-1])


def data_free_params(clf: Classifier, plan, cls: int) -> dict:
    """Stage parameters without a fit, for a network whose only fitted inverse is its top Linear
    layer (``data_free_eligible``): Eq. 6 with isotropic features (Cov(X) = σ²I, so Cov(X, Y_c) =
    σ² w_c) and λ → 0, i.e. the minimum-norm inverse of the logit, ``W = w_c / ‖w_c‖²`` and ``b = 0``
    (no data: no mean). Ours, for networks nobody can fit here (an ImageNet network with no ImageNet
    images offline); the paper always fits on data (Section 6.1.2: 50k ImageNet validation images).
    A fit from the offline photographs is no substitute: on efficientnet-lite0, Eq. 6 fitted on 2,550
    augmented crops of the scikit-image photographs other than the evaluation ones reconstructs
    held-out crops worse than their mean (R² −0.39), its w lies far from w_c (cosine 0.12–0.21), and
    its maps drop less (0.29× Occlusion against 0.41×; ``scripts/mipin_imagenet_variants.py``)."""
    top = plan.stages[-1]
    lin = clf.net.get_submodule(top.name)
    w = lin.weight.detach()[int(cls)].float()
    W = (w / w.dot(w).clamp_min(1e-30)).view(1, -1, 1)
    params = {len(plan.stages) - 1: {"W": W, "b": torch.zeros(1, w.numel(), device=w.device)}}
    return params
