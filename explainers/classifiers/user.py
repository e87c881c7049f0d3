"""A user's own checkpoint: TorchScript, or a state dict (safetensors or plain) for a torchvision architecture.

Plain ``.pt`` / ``.pth`` / ``.bin`` files are read only with ``torch.load(weights_only=True)``:
a pickle that would run code is refused and its code never runs. Safetensors holds tensors only.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Optional

import torch

from ..errors import ExplainerError
from .base import Classifier
from .torchvision_zoo import IMAGENET_MEAN, IMAGENET_STD


def _unwrap(obj) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ExplainerError("the checkpoint is not a plain state dict of tensors")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return _unwrap(load_file(str(path)))
        except ExplainerError:
            raise
        except Exception as e:  # noqa: BLE001
            raise ExplainerError(f"{path.name}: not a readable safetensors file ({type(e).__name__})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError for code-running pickles, and corrupt files
        msg = str(e).splitlines()[0][:100] if str(e) else type(e).__name__
        raise ExplainerError(f"refusing to unpickle {path.name}: not a plain state dict ({msg})") from None
    return _unwrap(obj)


def _num_classes(state: dict[str, torch.Tensor]) -> int:
    last = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    if not last:
        raise ExplainerError("cannot find the final linear layer in the state dict")
    return int(last[-1].shape[0])


def load_checkpoint(path: str | Path, arch: Optional[str] = None, labels: Optional[list[str]] = None, device: torch.device = torch.device("cpu")) -> Classifier:
    """Load a user checkpoint as a :class:`Classifier` (224×224 input, ImageNet normalisation)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ExplainerError(f"{path}: no such checkpoint file")
    if _is_torchscript(path):
        try:
            net = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:  # noqa: BLE001
            raise ExplainerError(f"{path.name}: not a loadable TorchScript file ({type(e).__name__})") from None
        with torch.no_grad():
            n = int(net(torch.zeros(1, 3, 224, 224)).shape[-1])
        title = f"TorchScript {path.name}"
    else:
        if arch is None:
            raise ExplainerError(f"{path.name} is a state dict: name its torchvision architecture with --arch (e.g. resnet18)")
        from torchvision.models import get_model, list_models

        if arch not in list_models():
            raise ExplainerError(f"unknown torchvision architecture {arch!r}")
        state = _read_state_dict(path)
        n = _num_classes(state)
        try:
            net = get_model(arch, weights=None, num_classes=n)
            if arch == "googlenet" or arch.startswith("inception"):
                state = {k: v for k, v in state.items() if not k.startswith("aux")}
                net = get_model(arch, weights=None, num_classes=n, aux_logits=False, init_weights=False)
            net.load_state_dict(state)
        except (RuntimeError, ValueError, TypeError) as e:
            raise ExplainerError(f"{path.name} does not fit architecture {arch} ({str(e).splitlines()[0][:120]})") from None
        title = f"{arch} from {path.name}"
    if labels is None:
        if n == 1000:
            from torchvision.models import ResNet18_Weights

            labels = list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
        else:
            labels = [f"class {i}" for i in range(n)]
    if len(labels) != n:
        raise ExplainerError(f"{len(labels)} labels given for a model with {n} classes")
    net.to(device)
    return Classifier(
        id=str(path), net=net, labels=list(labels), input_size=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD,
        resize=256, family="user", info={"title": title},
    )
