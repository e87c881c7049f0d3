"""torchvision ImageNet models, loaded through torchvision's weights API.

The models the papers use (VGG16, VGG19, ResNet34, ResNet50, GoogLeNet, DenseNet121) and one light
model (MobileNetV3-small), each with its ``IMAGENET1K_V1`` weights. A model is available when its
weight file is in the torch hub cache (``$TORCH_HOME/hub/checkpoints``); otherwise it is listed as
unavailable with a one-line reason, and loading tries a download only when the environment allows
it (``EXPLAINERS_OFFLINE`` unset) and fails fast when there is no network.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import torch

from ..errors import ExplainerError
from .base import Classifier

MODELS = {
    "tv-vgg16": ("vgg16", "VGG16 (ImageNet)"),
    "tv-vgg19": ("vgg19", "VGG19 (ImageNet)"),
    "tv-resnet34": ("resnet34", "ResNet-34 (ImageNet)"),
    "tv-resnet50": ("resnet50", "ResNet-50 (ImageNet)"),
    "tv-googlenet": ("googlenet", "GoogLeNet (ImageNet)"),
    "tv-densenet121": ("densenet121", "DenseNet-121 (ImageNet)"),
    "tv-mobilenet_v3_small": ("mobilenet_v3_small", "MobileNetV3-small (ImageNet, light)"),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def is_known(model_id: str) -> bool:
    return model_id in MODELS


def _weights(model_id: str):
    from torchvision.models import get_model_weights

    return get_model_weights(MODELS[model_id][0]).IMAGENET1K_V1


def weight_file(model_id: str) -> Path:
    """Where torchvision's weights API keeps (or would download) this model's weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(_weights(model_id).url).name


def _reason(model_id: str) -> str:
    return (
        f"weights not in the torch hub cache ({weight_file(model_id)}); when online run "
        f"`python -m explainers models --download {model_id}`, or copy the file there"
    )


def entries():
    """One ``ClassifierEntry`` per model; looks at the disk only, never the network."""
    from . import ClassifierEntry

    rows = []
    for mid, (_, title) in MODELS.items():
        ok = weight_file(mid).is_file()
        rows.append(ClassifierEntry(mid, title, "torchvision", ok, "" if ok else _reason(mid), None, 224))
    return rows


def _offline() -> bool:
    return os.environ.get("EXPLAINERS_OFFLINE", "") == "1"


def download(model_id: str, timeout: float = 30.0) -> Path:
    """Fetch the weights into the hub cache through torchvision (needs internet)."""
    if not is_known(model_id):
        raise ExplainerError(f"unknown torchvision model {model_id!r}; known: {', '.join(MODELS)}")
    if _offline():
        raise ExplainerError(f"{model_id}: EXPLAINERS_OFFLINE=1, not downloading")
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        _weights(model_id).get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # noqa: BLE001 - any network failure becomes one line
        raise ExplainerError(f"{model_id}: download failed ({type(e).__name__}); {_reason(model_id)}") from None
    finally:
        socket.setdefaulttimeout(old)
    return weight_file(model_id)


def load(model_id: str, device: torch.device) -> Classifier:
    """Build the architecture and load its ImageNet weights from the hub cache (see module doc)."""
    from torchvision.models import get_model

    weights = _weights(model_id)
    path = weight_file(model_id)
    if not path.is_file():
        if _offline():
            raise ExplainerError(f"{model_id} is unavailable: {_reason(model_id)}")
        download(model_id, timeout=10.0)
    try:
        # torchvision's own builder: it reads the cached file (weights_only) and applies the
        # per-architecture fixes (GoogLeNet's aux heads and input transform, DenseNet's old keys).
        net = get_model(MODELS[model_id][0], weights=weights)
    except Exception as e:  # noqa: BLE001 - a corrupt or mismatched file
        raise ExplainerError(f"{model_id}: cannot load {path} ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    net.to(device)
    return Classifier(
        id=model_id,
        net=net,
        labels=list(weights.meta["categories"]),
        input_size=(224, 224),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        resize=256,
        family="torchvision",
        info={"title": MODELS[model_id][1], "weights": str(weights), "file": str(path)},
    )
