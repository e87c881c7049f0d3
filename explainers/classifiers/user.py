"""A user's own checkpoint: torch.export, TorchScript, or a state dict (safetensors or plain) for a
torchvision architecture.

* ``torch.export`` (``torch.export.save``, usually ``.pt2``): see :mod:`.exported`; the network is
  unflattened back into its module tree where it can be, so layer methods can hook into it.
* TorchScript (``torch.jit.save``; a zip holding ``code/`` and ``constants.pkl``): loaded with
  ``torch.jit.load`` and used as it is (its layers are hidden: no hooks, so no Grad-CAM or MIP-IN).
  Both formats carry code: they are read only from the server's own disk, never uploaded.
* A state dict in ``.safetensors`` (tensors only) or a plain ``.pt`` / ``.pth`` / ``.bin`` file, for
  the torchvision classification architecture named by ``arch`` (any name
  ``torchvision.models.list_models(module=torchvision.models)`` gives), built with ``weights=None``
  and ``num_classes`` read off the state dict. Plain files are read only with
  ``torch.load(weights_only=True)``: a pickle that would run code is refused and its code never runs.
  ``module.`` prefixes (DataParallel) are stripped and ``{"state_dict": ...}`` / ``{"model": ...}``
  containers unwrapped.

Preprocessing is torchvision's ImageNet recipe (resize 256, centre-crop 224, ImageNet mean/std)
unless the file says otherwise: a TorchScript extra file ``explainers.json`` or a safetensors
metadata entry ``explainers`` holding JSON with any of ``input_size`` ([H, W] or an int),
``resize`` (int or null; null when only ``input_size`` is given: a plain resize), ``mean``, ``std``
(three floats), ``labels`` and ``title``; for torch.export and TorchScript files also a sidecar
``NAME.json`` beside ``NAME.pt2`` with the same keys. The models folder (``NAME.py`` with
``build()``) is :mod:`.models_folder`.
"""
from __future__ import annotations

import difflib
import pickle
import re
import struct
import warnings
from pathlib import Path
from typing import Optional

import torch

from ..errors import ExplainerError, one_line
from .base import Classifier, resolve_device
from .meta import META_KEY, META_KEYS, META_NAME, _parse_meta, check_meta, sidecar_meta  # noqa: F401 (re-exported)
from .torchvision_zoo import IMAGENET_MEAN, IMAGENET_STD, build_bare

_CONTAINERS = ("state_dict", "model_state_dict", "model", "net", "module")



# -- reading files ------------------------------------------------------------------------------
def _is_torchscript(path: Path) -> bool:
    from .exported import zip_names

    return any(n.endswith("/constants.pkl") or "/code/" in n for n in zip_names(path))


def _is_safetensors(path: Path) -> bool:
    """The safetensors layout: an 8-byte little-endian header length, then a JSON object."""
    if path.suffix == ".safetensors":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 0 < struct.unpack("<Q", head[:8])[0] < path.stat().st_size


def _unwrap(obj, name: str) -> dict[str, torch.Tensor]:
    for _ in range(3):  # {"model": {"state_dict": {...}}, "epoch": 9} and the like
        inner = next((obj[k] for k in _CONTAINERS if isinstance(obj.get(k), dict)), None) if isinstance(obj, dict) else None
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj:
        raise ExplainerError(f"{name} is not a state dict (found {type(obj).__name__}); save model.state_dict()")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state or not all(isinstance(k, str) for k in state):
        raise ExplainerError(f"{name} holds no tensors by name; save model.state_dict()")
    # nn.DataParallel / DistributedDataParallel ("module.") and torch.compile ("_orig_mod.") prefixes
    return {re.sub(r"^(?:module\.|_orig_mod\.)+", "", k): v for k, v in state.items()}


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - a pickle renamed .safetensors, a truncated file ...
        raise ExplainerError(f"{path.name}: not a readable safetensors file ({one_line(e, 80)})") from None
    return _unwrap(state, path.name), _parse_meta(meta.get(META_KEY), path.name)


def _unpickling_reason(e: BaseException) -> str:
    """The informative sentence of torch's long weights-only refusal (e.g. 'Unsupported global: posix.system')."""
    parts = []
    for para in re.split(r"\n\s*\n", str(e)):
        para = " ".join(para.split())
        if "WeightsUnpickler error:" in para:
            para = para.split("WeightsUnpickler error:", 1)[1].strip()
        elif para.startswith(("Weights only load failed", "Check the documentation")):
            continue
        parts.append(para.split(". Please", 1)[0])
    return " ".join(p for p in parts if p)[:100] or "it would need more than tensors"


def _read_plain(path: Path) -> dict[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": nothing to act on
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refused a global: code would have run
        raise ExplainerError(f"refusing to unpickle {path.name}: not a plain state dict ({_unpickling_reason(e)})") from None
    except Exception as e:  # noqa: BLE001 - truncated or corrupt files
        raise ExplainerError(f"{path.name}: not a readable PyTorch checkpoint ({type(e).__name__}: {one_line(e, 100)})") from None
    return _unwrap(obj, path.name)


# -- building ----------------------------------------------------------------------------------
def _classification_models() -> list[str]:
    import torchvision.models as tvm

    return tvm.list_models(module=tvm)


def _arch_kwargs(arch: str) -> dict:
    if arch == "googlenet" or arch.startswith("inception"):
        return {"aux_logits": False, "init_weights": False}
    return {}


def _num_classes(arch: str, state: dict[str, torch.Tensor], name: str) -> int:
    """The class count that makes ``arch``'s state dict shapes agree with ``state``.

    Builds the architecture (on the 'meta' device where it can) with 1000 classes; the
    entries whose shapes differ from the user's are the output layer's, and their first
    dimension is the class count.
    """
    ref = build_bare(arch, num_classes=1000, **_arch_kwargs(arch)).state_dict()
    common = [k for k in ref if k in state]
    if not common:
        raise ExplainerError(f"{name} does not fit architecture {arch} (no parameter names in common); check --arch")
    differ = {state[k].shape[0] for k in common if state[k].shape != ref[k].shape and state[k].dim() >= 1}
    if not differ:
        return 1000
    if len(differ) == 1:
        return int(differ.pop())
    raise ExplainerError(f"{name} does not fit architecture {arch} (shapes differ beyond the output layer); check --arch")


def _build(arch: Optional[str], state: dict[str, torch.Tensor], name: str) -> tuple[torch.nn.Module, int]:
    if arch is None:
        raise ExplainerError(f"{name} is a state dict: name its torchvision architecture with --arch (e.g. resnet18)")
    known = _classification_models()
    if arch not in known:
        close = difflib.get_close_matches(arch, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see torchvision.models.list_models()"
        raise ExplainerError(f"unknown torchvision architecture {arch!r}{hint}")
    if arch == "googlenet" or arch.startswith("inception"):
        state = {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2.", "AuxLogits."))}
    n = _num_classes(arch, state, name)
    try:
        net = build_bare(arch, num_classes=n, **_arch_kwargs(arch))
        net.load_state_dict(state, strict=True, assign=True)
    except (RuntimeError, ValueError, TypeError, KeyError) as e:
        raise ExplainerError(f"{name} does not fit architecture {arch} ({one_line(e, 140)})") from None
    left = [k for k, t in [*net.named_parameters(), *net.named_buffers()] if t.is_meta]
    if left:
        raise ExplainerError(f"{name} does not fit architecture {arch} ({left[0]} is not in the file)")
    return net, n


def _runs_alone(net: torch.nn.Module, size: tuple[int, int]) -> bool:
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, *size))
        return True
    except Exception:  # noqa: BLE001
        return False


def _probe(net: torch.nn.Module, size: tuple[int, int], name: str, batch: int = 1) -> int:
    """Run ``batch`` blank images through a model: its class count, or a one-line reason."""
    try:
        with torch.no_grad():
            out = net(torch.zeros(batch, 3, *size))
    except Exception as e:  # noqa: BLE001 - TorchScript and torch.export raise their own error types
        msg = one_line(e, 100)
        if batch > 1 and _runs_alone(net, size):  # exported with a fixed batch of one
            raise ExplainerError(f"{name}: exported for a batch of one; export with a dynamic batch, "
                                 "dynamic_shapes=({0: torch.export.Dim('batch')},)") from None
        raise ExplainerError(f"{name}: the model fails on a {batch}x3x{size[0]}x{size[1]} image ({msg}); "
                             "set input_size in its metadata (META, NAME.json or explainers.json)") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != batch:
        raise ExplainerError(f"{name}: the model must return logits of shape (batch, classes), not {type(out).__name__}"
                             f"{tuple(out.shape) if isinstance(out, torch.Tensor) else ''}")
    return int(out.shape[1])


def load_checkpoint(
    path: str | Path,
    arch: Optional[str] = None,
    labels: Optional[list[str]] = None,
    device: torch.device | str | None = "cpu",
    model_id: Optional[str] = None,
) -> Classifier:
    """Load a user checkpoint as a :class:`Classifier` (see the module doc for what is accepted).

    ``labels``: one name per class; default ImageNet's categories for 1000 classes, else
    ``"class 0"`` .. ``"class N-1"``. ``model_id``: the classifier's id (default: the path).
    Raises :class:`ExplainerError` with a one-line reason.
    """
    from . import exported

    path = Path(path).expanduser()
    if not path.is_file():
        raise ExplainerError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise ExplainerError(f"{path.name}: the file is empty")
    device = resolve_device(device)
    meta: dict = {}
    if exported.is_exported(path):
        net, meta = exported.load(path)
        n = _probe(net, meta.get("input_size", (224, 224)), path.name, batch=2)
        kind, title = "export", f"torch.export {path.name}"
    elif _is_torchscript(path):
        extra = {META_NAME: ""}
        try:
            with warnings.catch_warnings():  # torch.jit's deprecation notice
                warnings.simplefilter("ignore", FutureWarning)
                net = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except Exception as e:  # noqa: BLE001
            raise ExplainerError(f"{path.name}: not a loadable TorchScript file ({one_line(e, 100)})") from None
        meta = _parse_meta(extra.get(META_NAME) or None, path.name) or sidecar_meta(path)
        net.eval()
        n = _probe(net, meta.get("input_size", (224, 224)), path.name)
        kind, title = "torchscript", f"TorchScript {path.name}"
    else:
        if _is_safetensors(path):
            state, meta = _read_safetensors(path)
        else:
            state = _read_plain(path)
        net, n = _build(arch, state, path.name)
        kind, title = "state_dict", f"{arch} from {path.name}"
    return make_classifier(model_id or str(path), net, n, meta, labels, device,
                           {"title": meta.get("title", title), "kind": kind, "arch": arch if kind == "state_dict" else None,
                            "file": str(path)})


def default_labels(n: int, labels: Optional[list[str]], meta: dict) -> list[str]:
    """``labels``, else the metadata's, else ImageNet's categories for 1000 classes, else ``class i``."""
    if labels is None:
        labels = meta.get("labels")
    if labels is None:
        if n == 1000:
            from torchvision.models import ResNet18_Weights

            labels = list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
        else:
            labels = [f"class {i}" for i in range(n)]
    labels = [str(v) for v in labels]
    if len(labels) != n:
        raise ExplainerError(f"{len(labels)} labels given for a model with {n} classes")
    return labels


def make_classifier(model_id: str, net: torch.nn.Module, n: int, meta: dict, labels: Optional[list[str]],
                    device: torch.device, info: dict) -> Classifier:
    """A user network as a :class:`Classifier`, with ImageNet preprocessing unless ``meta`` says otherwise."""
    labels = default_labels(n, labels, meta)
    net.to(device)
    return Classifier(
        id=model_id,
        net=net,
        labels=labels,
        input_size=tuple(meta.get("input_size", (224, 224))),
        mean=tuple(meta.get("mean", IMAGENET_MEAN)),
        std=tuple(meta.get("std", IMAGENET_STD)),
        resize=meta["resize"] if "resize" in meta else (None if "input_size" in meta else 256),
        family="user",
        info=info,
    )
