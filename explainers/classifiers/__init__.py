"""The classifier zoo: embedded models, torchvision ImageNet models, user checkpoints."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..errors import ExplainerError
from .base import Classifier, ClassifierEntry, resolve_device
from .embedded import DEFAULT_CLASSIFIER, EMBEDDED, load_embedded


def list_classifiers() -> list[ClassifierEntry]:
    """Every known classifier id, embedded first, with availability and a one-line reason."""
    from . import torchvision_zoo

    rows = []
    for spec in EMBEDDED.values():
        ok = spec.weights.exists() and spec.card.exists()
        reason = "" if ok else f"weights missing; run `python -m explainers.training.classifiers --model {spec.id}`"
        rows.append(ClassifierEntry(spec.id, spec.title, "embedded", ok, reason, spec.dataset, spec.input_size))
    rows.extend(torchvision_zoo.entries())
    return rows


def load_classifier(
    model: str,
    device: str | torch.device | None = "auto",
    arch: Optional[str] = None,
    labels: Optional[list[str]] = None,
) -> Classifier:
    """Load a classifier by id (``list_classifiers()``) or from a checkpoint path.

    ``device="auto"`` picks CUDA when present. A checkpoint is a TorchScript file, or a
    safetensors / plain state-dict file for the torchvision architecture named by ``arch``.
    Raises :class:`ExplainerError` with a one-line reason when it cannot be loaded.
    """
    from . import torchvision_zoo, user

    dev = resolve_device(device)
    if model in EMBEDDED:
        return load_embedded(model, dev)
    if torchvision_zoo.is_known(model):
        return torchvision_zoo.load(model, dev)
    path = Path(model).expanduser()
    if path.suffix or path.exists():
        return user.load_checkpoint(path, arch=arch, labels=labels, device=dev)
    known = ", ".join(e.id for e in list_classifiers())
    raise ExplainerError(f"unknown model {model!r}; known: {known}; or give a checkpoint path")


__all__ = [
    "Classifier",
    "ClassifierEntry",
    "DEFAULT_CLASSIFIER",
    "EMBEDDED",
    "list_classifiers",
    "load_classifier",
    "resolve_device",
]
