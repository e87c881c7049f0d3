"""Fitted generators: their file names, where they are, loading them once, choosing one.

Fits are ``dcontrol-<transformer>.safetensors`` (+ ``.json`` card with the feature plan and the
training options) in the user's fit folder or ``assets/explainers/<model id>/``; the user's come
first (``explainers.fitted``). Written by ``python -m explainers fit --explainer dcontrol``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from torch import nn

from ... import fitted
from ...classifiers.base import Classifier
from ...errors import ExplainerError
from .config import DControlConfig
from .generator import MaskGenerator

FIT_NAME = "dcontrol"


def fit_filename(transformer: str) -> str:
    return f"{FIT_NAME}-{transformer}.safetensors"


def fit_candidates(clf: Classifier, transformer: str) -> list[Path]:
    """The classifier's fits for ``transformer``, best first (the user's before the committed one)."""
    return fitted.candidates(clf.id, fit_filename(transformer))


def _build(card: dict) -> nn.Module:
    return MaskGenerator(card["plan"])


def load_generator(path: str, device: str) -> tuple[MaskGenerator, dict]:
    """The fitted generator at ``path`` on ``device`` and its card (eval mode, frozen; loaded once
    per file version and device, shared: never modify it)."""
    return fitted.load_frozen(path, device, _build)


def choose_generator(clf: Classifier, cfg: DControlConfig) -> Optional[tuple[MaskGenerator, dict, Path]]:
    """The fitted generator to use, or None when the per-image optimisation is to be used."""
    if cfg.generator == "optimise":
        return None
    paths = [Path(cfg.fit).expanduser()] if cfg.fit else fit_candidates(clf, cfg.transformer)
    if cfg.fit and not paths[0].exists():
        raise ExplainerError(f"dcontrol: fitted generator not found: {cfg.fit}")
    for p in paths:
        gen, card = load_generator(str(p.resolve()), str(clf.device))
        if card.get("model") not in (None, clf.id) and not cfg.fit:
            continue
        plan = card["plan"]
        if tuple(plan["input_size"]) != tuple(clf.input_size) or int(plan["num_classes"]) != clf.num_classes:
            if cfg.fit:
                raise ExplainerError(f"dcontrol: {p.name} was fitted for another input size or number of classes")
            continue
        return gen, card, p
    if cfg.generator == "fitted":
        raise ExplainerError(
            f"dcontrol: no fitted {cfg.transformer} generator for {clf.id}; fit one with "
            f"`python -m explainers fit --explainer dcontrol --model {clf.id} --data SOURCE --set transformer={cfg.transformer}`"
            " or use generator=optimise"
        )
    return None
