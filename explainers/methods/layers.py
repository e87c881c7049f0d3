"""Finding layers by what they output, not by their class: for methods that hook into a network.

A dry forward with a forward hook on every module records, in the order they finish, the modules
and the shapes of their outputs. :func:`last_spatial` is then the last module whose output is a
4-D activation with more than one position (B, C, H, W), H·W > 1 — the end of the convolutional
part, before global pooling — called once per forward (a module reused within one forward, like
ResNet's shared ReLU, cannot be hooked unambiguously) and not an adaptive pooling to a grid. Containers finish after their children, so
a block (ResNet's ``layer4``, a ``features`` Sequential) is chosen over its last layer: the same
tensor, and the name users know. ``Conv2d`` subclasses, depthwise blocks and the
``InterpreterModule``s of an unflattened ``torch.export`` program all qualify.

:func:`hidden` says why a network's layers cannot be reached (TorchScript, a flat exported graph),
with the fix.
"""
from __future__ import annotations

import threading
import weakref
from typing import Optional

import torch
from torch import nn

from ..errors import ExplainerError, one_line

# adaptive pooling to a fixed grid (VGG's 7×7 ``avgpool``) resizes what came before; it is not a layer of its own
RESIZERS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
PROBE_SIZES = ((224, 224), (64, 64), (28, 28), (32, 32), (96, 96), (128, 128), (256, 256), (299, 299))
_FOUND: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()

TORCHSCRIPT_FIX = ("TorchScript hides layers (no hooks): load the architecture from the models folder "
                   "(NAME.py with build() beside NAME.safetensors) or save it with torch.export")


def hidden(net: nn.Module) -> str:
    """One line with the fix when the network's layers cannot be hooked, else ""."""
    if isinstance(net, torch.jit.ScriptModule):
        return TORCHSCRIPT_FIX
    why = getattr(net, "layers_hidden", "")
    if why:
        return f"{why}; export the model with its module structure (torch.export.export(..., strict=False)) or use the models folder"
    return ""


def _channels(net: nn.Module) -> tuple[int, ...]:
    """The input channels of the first 4-D weight (a convolution's), else RGB then grey."""
    for p in net.parameters():
        if p.dim() == 4:
            return (int(p.shape[1]),)
    return (3, 1)


def record(net: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module, tuple, int]]:
    """(name, module, output shape or (), calls) of every module in the order it last finished, from one
    forward of ``x`` without gradients; every hook is removed afterwards."""
    order: dict[str, list] = {}
    count = [0]

    def hook(name, module):
        def f(_m, _inp, out):
            count[0] += 1
            row = order.setdefault(name, [module, (), 0, 0])
            row[1] = tuple(out.shape) if isinstance(out, torch.Tensor) else ()
            row[2] += 1
            row[3] = count[0]
        return f

    handles = []
    try:
        for name, m in net.named_modules():
            handles.append(m.register_forward_hook(hook(name, m)))
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    rows = sorted(order.items(), key=lambda kv: kv[1][3])
    return [(name, m, shape, calls) for name, (m, shape, calls, _) in rows]


def last_spatial(net: nn.Module, input_size: Optional[tuple[int, int]] = None) -> tuple[str, nn.Module]:
    """(qualified name, module) of the last 4-D activation with H·W > 1 (see the module doc), found by a
    dry forward at ``input_size`` (or the first of ``PROBE_SIZES`` the network accepts); remembered per network."""
    why = hidden(net)
    if why:
        raise ExplainerError(f"no layer to hook: {why}")
    with _LOCK:
        got = _FOUND.get(net)
    if got is not None and (input_size is None or got[2] == tuple(input_size)):
        return got[0], got[1]
    sizes = [tuple(input_size)] if input_size is not None else list(PROBE_SIZES)
    param = next(iter(net.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    rows, err = None, None
    for size in sizes:
        for c in _channels(net):
            try:
                rows = record(net, torch.zeros(1, c, *size, device=device))
                break
            except Exception as e:  # noqa: BLE001 - a size the network does not take
                err = e
        if rows is not None:
            break
    if rows is None:
        raise ExplainerError(f"a dry forward through the network failed ({one_line(err, 100)})")
    spatial = [(n, m) for n, m, shape, calls in rows
               if len(shape) == 4 and shape[2] * shape[3] > 1 and calls == 1 and n and not isinstance(m, RESIZERS)]
    if not spatial:
        raise ExplainerError("the network has no spatial layer (no module outputs a 4-D activation larger than 1×1)")
    with _LOCK:
        _FOUND[net] = (*spatial[-1], size)
    return spatial[-1]
