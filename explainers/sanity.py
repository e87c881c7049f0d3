"""Sanity checks for saliency maps (Adebayo et al. 2018), as the PMI (000, Fig. 15 / 24) and
VarSal (002, Sec. 4.3, Fig. 4) papers run them.

- :func:`cascading_randomisation` — the model-parameter test: the classifier's layers are
  re-initialised one more at a time *from the top (logits) down*, and the map of each
  randomised network is compared with the original map by Spearman rank correlation
  (``scipy.stats.spearmanr``) and SSIM (``skimage.metrics.structural_similarity``). A method
  that explains the model must lose its map as the model loses its weights (both measures
  falling towards 0); one that stays near 1 (Guided Backprop, say) only redraws the image.
- :func:`label_sensitivity` — the map for another class against the target's map (MIP-IN's
  Sec. 6.4 test, with its mean l2 distance): a class-sensitive method gives a different map.

The randomisation works on a *copy* of the network (``copy.deepcopy``) wrapped in its own
:class:`~explainers.classifiers.base.Classifier` with a new id; the shared, cached model is never
touched. A "layer" is a module with its own parameters (convolution, linear, ...), found in
forward order by running the copy once with hooks; a normalisation layer (BatchNorm and the
like) goes with the layer it follows. Re-initialisation draws from one seeded
``torch.Generator``: Kaiming-normal weights (fan-in), biases uniform in ±1/√fan-in, a
normalisation layer reset to the identity (weight 1, bias 0, running mean 0, variance 1).

Amortised methods (a fitted encoder, generator or inverse) see a new classifier id, so they use
their per-image mode or report that the randomised network has no fit; each step's error is
raised as an ``ExplainerError`` naming the step.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from .classifiers.base import Classifier
from .core import as_pixels, explain, get_method
from .errors import ExplainerError
from .progress import report

NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


# ---------------------------------------------------------------------------------------------
# similarity


def _scale01(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo)


def similarity(a: Any, b: Any, absolute: bool = False) -> dict[str, float]:
    """Spearman rank correlation and SSIM of two maps (H, W), plus their l2 distance.

    SSIM is computed on the maps each scaled to [0, 1] (``data_range=1``; only the comparison
    scales, the maps stay raw). ``absolute`` compares |a| and |b| (Adebayo et al. report both).
    Spearman is NaN when a map is constant."""
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ExplainerError(f"similarity needs two maps of one shape (H, W), got {a.shape} and {b.shape}")
    if absolute:
        a, b = np.abs(a), np.abs(b)
    if a.std() == 0 or b.std() == 0:
        rho = float("nan")
    else:
        rho = float(spearmanr(a.ravel(), b.ravel()).statistic)
    win = min(7, *a.shape)
    win -= (win + 1) % 2  # odd
    ssim = float(structural_similarity(_scale01(a), _scale01(b), data_range=1.0, win_size=max(win, 3))) if min(a.shape) >= 3 else float("nan")
    return {"spearman": rho, "ssim": ssim, "l2": float(np.linalg.norm(a - b))}


# ---------------------------------------------------------------------------------------------
# layers and randomised copies


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


# ---------------------------------------------------------------------------------------------
# the checks


@dataclass
class SanityResult:
    method: str
    map_name: str
    target: int
    steps: list[str]  # "original", then the top layer's name, ... (cumulative)
    spearman: np.ndarray  # (S,) against the original map (1 at step 0)
    ssim: np.ndarray  # (S,)
    maps: list[np.ndarray] = field(default_factory=list)  # the map at each step
    absolute: bool = False
    seed: int = 0

    def as_dict(self) -> dict:
        return {
            "method": self.method, "map": self.map_name, "target": self.target, "steps": self.steps,
            "spearman": [None if math.isnan(v) else float(v) for v in self.spearman],
            "ssim": [None if math.isnan(v) else float(v) for v in self.ssim],
            "absolute": self.absolute, "seed": self.seed,
        }


def _map_name(method: str, map_name: Optional[str]) -> str:
    spec = get_method(method)
    if map_name is None:
        return next(iter(spec.maps))
    if map_name not in spec.maps:
        raise ExplainerError(f"method {method} has no map {map_name!r}; it has {', '.join(spec.maps)}")
    return map_name


def cascading_randomisation(
    clf: Classifier,
    image: Any,
    method: str,
    target: Optional[int | str] = None,
    map_name: Optional[str] = None,
    seed: int = 0,
    steps: Optional[int] = None,
    absolute: bool = False,
    progress: Optional[Callable] = None,
    **params: Any,
) -> SanityResult:
    """The cascading model-parameter randomisation test for one image and one method.

    Step 0 is the original map; step k re-initialises the top k layers (all of them when
    ``steps`` is None). ``target`` defaults to the original model's top-1 class and stays fixed.
    ``params`` go to the method (as in :func:`explainers.explain`)."""
    name = _map_name(method, map_name)
    x = as_pixels(clf, image)
    base = explain(clf, x, method, target=target, **params)
    t = int(base.meta["target"])
    orig = base.maps[name]
    labels, maps, rho, ssim = ["original"], [orig], [1.0], [1.0]
    layers = parameter_layers(clf)
    total = (len(layers) if steps is None else min(int(steps), len(layers))) + 1
    report(progress, 1, total, "original")
    for k, names, rclf in randomised_copies(clf, seed, steps):
        try:
            m = explain(rclf, x, method, target=t, **params).maps[name]
        except ExplainerError as e:
            raise ExplainerError(f"sanity check, {method} with the top {k} layer(s) randomised: {e}") from None
        sim = similarity(orig, m, absolute)
        labels.append(names[0])
        maps.append(m)
        rho.append(sim["spearman"])
        ssim.append(sim["ssim"])
        report(progress, k + 1, total, names[0])
    return SanityResult(method, name, t, labels, np.array(rho), np.array(ssim), maps, absolute, int(seed))


def label_sensitivity(
    clf: Classifier,
    image: Any,
    method: str,
    target: Optional[int | str] = None,
    other: Optional[int | str] = None,
    map_name: Optional[str] = None,
    absolute: bool = False,
    **params: Any,
) -> dict:
    """The map for ``other`` (default: the runner-up class) against the map for ``target``
    (default: top-1): Spearman, SSIM and the l2 distance of the raw maps (MIP-IN Sec. 6.4).
    High similarity = the method does not depend on the class."""
    name = _map_name(method, map_name)
    x = as_pixels(clf, image)
    a = explain(clf, x, method, target=target, **params)
    t = int(a.meta["target"])
    if other is None:
        order = clf.probabilities(x[None].to(clf.device))[0].argsort(descending=True).tolist()
        o = next(c for c in order if c != t)
    else:
        o = clf.label_index(other)
    if o == t:
        raise ExplainerError("label sensitivity needs another class than the target")
    b = explain(clf, x, method, target=o, **params)
    return {"method": method, "map": name, "target": t, "other": o, **similarity(a.maps[name], b.maps[name], absolute),
            "maps": (a.maps[name], b.maps[name])}


__all__ = [
    "SanityResult", "cascading_randomisation", "fully_randomised", "label_sensitivity", "parameter_layers",
    "randomised_copies", "reinitialise", "similarity",
]
