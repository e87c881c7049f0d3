"""Randomised copies of a classifier for the cascading test: its layers from the top (logits) down,
found in forward order, and copies with the top k of them re-initialised from one seeded generator.
The shared network is never touched (every step works on a deep copy)."""
from __future__ import annotations

import copy
import dataclasses
import math
from typing import Optional

import torch
from torch import nn

from ..classifiers.base import Classifier
from ..errors import ExplainerError

NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def _wrap(clf: Classifier, net: nn.Module, suffix: str) -> Classifier:
    """A Classifier like ``clf`` around ``net`` (a copy), with its own id."""
    return dataclasses.replace(clf, id=f"{clf.id}~{suffix}", net=net, info={**clf.info, "randomised_from": clf.id})


def _named_leaves_in_forward_order(clf: Classifier, net: nn.Module) -> list[str]:
    """Names of the modules with their own parameters, in the order ``net`` calls them."""
    names = {m: n for n, m in net.named_modules()}
    order: list[str] = []
    handles = []

    def hook(mod, inp, out):
        n = names[mod]
        if n not in order:
            order.append(n)

    try:
        for mod in net.modules():
            if any(True for _ in mod.parameters(recurse=False)):
                handles.append(mod.register_forward_hook(hook))
        h, w = clf.input_size
        with torch.no_grad():
            _wrap(clf, net, "probe").logits01(torch.zeros(1, 3, h, w, device=clf.device))
    finally:
        for hd in handles:
            hd.remove()
    # parametrised modules the forward never called (unused heads) are left out
    return order


def parameter_layers(clf: Classifier) -> list[list[str]]:
    """The classifier's layers from the top (logits) down: each a list of module names (a layer
    and the normalisation layers that follow it). Works on a copy."""
    net = copy.deepcopy(clf.net)
    order = _named_leaves_in_forward_order(clf, net)
    mods = dict(net.named_modules())
    groups: list[list[str]] = []
    for n in order:
        if isinstance(mods[n], NORMS) and groups:
            groups[-1].append(n)
        else:
            groups.append([n])
    if not groups:
        raise ExplainerError(f"{clf.id} has no layer with parameters to randomise")
    return groups[::-1]


def _fan_in(p: torch.Tensor) -> int:
    return int(p[0].numel()) if p.dim() >= 2 else int(p.numel())


@torch.no_grad()
def reinitialise(module: nn.Module, generator: torch.Generator) -> None:
    """Re-draw ``module``'s own parameters from ``generator`` (see the module docstring)."""
    if isinstance(module, NORMS):
        for name, p in module.named_parameters(recurse=False):
            p.fill_(1.0 if name == "weight" else 0.0)
        if getattr(module, "running_mean", None) is not None:
            module.running_mean.zero_()
            module.running_var.fill_(1.0)
        return
    params = dict(module.named_parameters(recurse=False))
    weight = params.get("weight")
    fan = _fan_in(weight) if weight is not None and weight.dim() >= 2 else None
    for name, p in params.items():
        if p.dim() >= 2:
            std = math.sqrt(2.0 / _fan_in(p))
            p.copy_((torch.randn(p.shape, generator=generator) * std).to(p.device, p.dtype))
        else:
            bound = 1.0 / math.sqrt(fan if fan else max(1, p.numel()))
            p.copy_(((torch.rand(p.shape, generator=generator) * 2 - 1) * bound).to(p.device, p.dtype))


def randomised_copies(clf: Classifier, seed: int = 0, steps: Optional[int] = None):
    """Yield ``(k, layer_names, classifier)`` for k = 1, 2, …: a copy of ``clf`` with its top k
    layers re-initialised (cumulatively, one seeded generator). Each step's classifier holds its
    own network object (a copy of the working one), because some methods cache per-network
    state keyed on the object (Grad-CAM's private hooked copy)."""
    layers = parameter_layers(clf)
    n = len(layers) if steps is None else max(0, min(int(steps), len(layers)))
    net = copy.deepcopy(clf.net)
    mods = dict(net.named_modules())
    gen = torch.Generator().manual_seed(int(seed))
    for k in range(n):
        for name in layers[k]:
            reinitialise(mods[name], gen)
        yield k + 1, layers[k], _wrap(clf, copy.deepcopy(net), f"randomised-top{k + 1}-seed{seed}")


def fully_randomised(clf: Classifier, seed: int = 0) -> Classifier:
    """A copy of ``clf`` with every layer re-initialised."""
    last = None
    for _, _, c in randomised_copies(clf, seed):
        last = c
    assert last is not None
    return last
