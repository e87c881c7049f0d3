"""torchvision ImageNet models, loaded through torchvision's weights API.

The models the papers use (VGG16, VGG19, ResNet34, ResNet50, GoogLeNet, DenseNet121) and one light
model (MobileNetV3-small), each with its ``IMAGENET1K_V1`` weights. A model is available when its
weight file is in the torch hub cache (``$TORCH_HOME/hub/checkpoints``, the file name from the
weights' URL); otherwise it is listed as unavailable with a one-line reason. Loading reads that file
with ``torch.load(weights_only=True)`` into the architecture built with ``weights=None``; only when
the file is missing and ``EXPLAINERS_OFFLINE`` is not ``1`` does it try a download, with a short
socket timeout so that an offline machine fails fast.
"""
from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import torch

from ..errors import ExplainerError, one_line
from .base import Classifier, ClassifierEntry

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
INPUT_SIZE = (224, 224)
RESIZE = 256
LOAD_TIMEOUT_S = 10.0

# torchvision's densenet checkpoints predate the ban on '.' in module names: 'norm.1' -> 'norm1'
_DENSENET_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def is_known(model_id: str) -> bool:
    return model_id in MODELS


def _check(model_id: str) -> None:
    if not is_known(model_id):
        raise ExplainerError(f"unknown torchvision model {model_id!r}; known: {', '.join(MODELS)}")


def _weights(model_id: str):
    from torchvision.models import get_model_weights

    return get_model_weights(MODELS[model_id][0]).IMAGENET1K_V1


def weight_file(model_id: str) -> Path:
    """Where torchvision's weights API keeps (or would download) this model's weights."""
    _check(model_id)
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(_weights(model_id).url).name


def _reason(model_id: str) -> str:
    return (
        f"weights not in the torch hub cache ({weight_file(model_id)}); connect to the internet and run "
        f"`python -m explainers models --download {model_id}`, or copy the file there"
    )


def entries():
    """One ``ClassifierEntry`` per model; looks at the disk only, never the network."""

    rows = []
    for mid, (_, title) in MODELS.items():
        ok = weight_file(mid).is_file()
        rows.append(ClassifierEntry(mid, title, "torchvision", ok, "" if ok else _reason(mid), None, INPUT_SIZE[0]))
    return rows


def _offline() -> bool:
    return os.environ.get("EXPLAINERS_OFFLINE", "") == "1"



def download(model_id: str, timeout: float = 30.0) -> Path:
    """Fetch the weights into the hub cache (needs internet); returns the file's path.

    Uses torch.hub's downloader with torchvision's URL and checks the hash prefix in the file name,
    the same file and check as ``weights.get_state_dict(check_hash=True)``, without unpickling it.
    """
    _check(model_id)
    path = weight_file(model_id)
    if path.is_file():
        return path
    if _offline():
        raise ExplainerError(f"{model_id}: EXPLAINERS_OFFLINE=1, not downloading; unset it to download {path}, or copy the file there")
    url = _weights(model_id).url
    match = torch.hub.HASH_REGEX.search(path.name)
    # Sockets opened while downloading time out after ``timeout`` s (the default is "never"),
    # so an offline or firewalled machine fails fast; the previous default is put back after.
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), match.group(1) if match else None, progress=False)
    except Exception as e:  # noqa: BLE001 - any network or disk failure becomes one line
        raise ExplainerError(f"{model_id}: download failed ({type(e).__name__}: {one_line(e, 80)}); {_reason(model_id)}") from None
    finally:
        socket.setdefaulttimeout(old)
    return path


def build_bare(arch: str, **kwargs) -> torch.nn.Module:
    """``get_model(arch, weights=None, **kwargs)`` with its tensors on the 'meta' device.

    No memory and no time spent on a random initialisation that a state dict will overwrite
    (load it with ``assign=True``). Architectures whose constructor computes with tensors
    (RegNet) cannot be built on 'meta'; they are built on the CPU instead.
    """
    from torchvision.models import get_model

    try:
        with torch.device("meta"):
            return get_model(arch, weights=None, **kwargs)
    except (NotImplementedError, RuntimeError):
        return get_model(arch, weights=None, **kwargs)


def _build(arch: str) -> torch.nn.Module:
    kwargs = {}
    if arch == "googlenet":
        # as torchvision's googlenet(weights=...): inputs re-normalised the way the weights were trained
        kwargs = dict(aux_logits=False, init_weights=False, transform_input=True)
    return build_bare(arch, num_classes=1000, **kwargs)


def _fix_keys(arch: str, state: dict) -> dict:
    if arch == "googlenet":
        state = {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2."))}
    if arch.startswith("densenet"):
        state = {(lambda m: m.group(1) + m.group(2) if m else k)(_DENSENET_OLD_KEY.match(k)): v for k, v in state.items()}
    return state


def load(model_id: str, device: torch.device) -> Classifier:
    """Build the architecture and load its ImageNet weights from the hub cache (see module doc)."""
    _check(model_id)
    arch, title = MODELS[model_id]
    weights = _weights(model_id)
    path = weight_file(model_id)
    if not path.is_file():
        if _offline():
            raise ExplainerError(f"{model_id} is unavailable: {_reason(model_id)}")
        download(model_id, timeout=LOAD_TIMEOUT_S)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt file, or a pickle that is not plain tensors
        raise ExplainerError(f"{model_id}: cannot read {path} ({type(e).__name__}: {one_line(e, 100)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ExplainerError(f"{model_id}: {path} is not a state dict of tensors")
    net = _build(arch)
    try:
        net.load_state_dict(_fix_keys(arch, state), strict=True, assign=True)
    except Exception as e:  # noqa: BLE001 - missing / unexpected keys, wrong shapes
        raise ExplainerError(f"{model_id}: {path} does not match {arch} ({one_line(e, 160)})") from None
    left = [n for n, t in [*net.named_parameters(), *net.named_buffers()] if t.is_meta]
    if left:  # pragma: no cover - a tensor torchvision keeps out of the state dict
        raise ExplainerError(f"{model_id}: {path} does not set {left[0]}")
    net.to(device)
    return Classifier(
        id=model_id,
        net=net,
        labels=list(weights.meta["categories"]),
        input_size=INPUT_SIZE,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        resize=RESIZE,
        family="torchvision",
        info={"title": title, "weights": f"{type(weights).__name__}.{weights.name}", "file": str(path)},
    )


def random_init(arch: str, device: torch.device | str = "cpu", seed: int = 0, num_classes: int = 1000) -> Classifier:
    """A torchvision architecture (``resnet18``, ``vgg11``, ``resnet50``, ... or a ``tv-`` id) with
    random weights (``weights=None``, initialised under ``seed``; the global RNG is left as it was)
    and the ImageNet preprocessing: for tests and speed measurements without a download. Its maps
    mean nothing; its shapes and costs are those of the real model."""
    from torchvision.models import get_model

    arch = MODELS[arch][0] if arch in MODELS else arch.removeprefix("tv-")
    kwargs = dict(aux_logits=False, init_weights=True) if arch == "googlenet" else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        net = get_model(arch, weights=None, num_classes=int(num_classes), **kwargs)
    net.to(device)
    return Classifier(
        id=f"tv-{arch}-random{seed}",
        net=net,
        labels=[f"class {i}" for i in range(int(num_classes))],
        input_size=INPUT_SIZE,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        resize=RESIZE,
        family="torchvision",
        info={"title": f"{arch} (random weights, seed {seed})", "weights": "random"},
    )
