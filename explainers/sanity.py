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
their per-image mode (VarSal, the distribution controller) or report that the randomised network
has no fit; each step's error is raised as an ``ExplainerError`` naming the step.

Methods with no per-image mode, whose map *is* a fit to the network (MIP-IN: Algorithm 1 fits one
ridge-regression inverse per target class on data samples), are listed in :data:`NETWORK_FITS`.
For them the check fits the method on the spot on every network of the cascade — for the target
class only, on the first ``fit_samples`` images of the classifier's own dataset (train split,
``fit_data`` to use another), seeded with ``seed`` — through the method's registered fitter
(``python -m explainers fit``'s code path), into a temporary directory that is removed when the
check ends (:class:`NetworkFits`; nothing is written to the committed fits or the user's cache).
The *original* map is made with a fit made the same way on the original network, not with the
classifier's committed fit (6,000 images for the embedded models): the only thing that changes
along the cascade is then the network's weights, not the fit's sample size. Such a check is
slower by one fit per step (MIP-IN on shapes-resnet, 300 images, one CPU thread: about 0.4 s a
step, 5 s for the whole 10-layer cascade).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
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
# methods fitted to each network (no per-image mode)

FIT_SAMPLES = 300  # images per on-the-spot fit (about 0.4 s for MIP-IN on shapes-resnet, one CPU thread)


@dataclass(frozen=True)
class NetworkFit:
    """How a method that needs a fit made on the very network it explains is fitted in a sanity
    check: ``fitter`` is its entry in ``explainers.training.FITTERS`` (called as
    ``fit(clf, data, out_dir, progress, **options)``), ``options(target, samples, seed)`` gives the
    fitter's options (one class, the first ``samples`` images, the seed), and ``param`` is the
    method parameter that takes the fitted file."""

    fitter: str
    options: Callable[[int, int, int], dict]
    param: str = "fit"


NETWORK_FITS: dict[str, NetworkFit] = {
    # Algorithm 1: one inverse network per target class; only the target's is needed
    "mipin": NetworkFit("mipin", lambda target, samples, seed: {"classes": str(int(target)), "limit": int(samples), "seed": int(seed)}),
}


def needs_network_fit(method: str) -> bool:
    """Whether the sanity check fits ``method`` on every network itself (see :class:`NetworkFits`)."""
    return method in NETWORK_FITS


class NetworkFits:
    """On-the-spot fits of one method (an entry of :data:`NETWORK_FITS`), one per (network, class),
    all made the same way: the first ``samples`` images of ``data`` (default: the classifier's
    built-in dataset, its train split), with ``seed``. They are written to a private temporary
    directory, never under the classifier's fits, and reused for the same classifier id and class;
    :meth:`close` (or leaving a ``with`` block, or garbage collection) removes the directory.

    ``params(clf, target)`` fits if needed and returns the method parameters that select the fit,
    to pass to :func:`explainers.explain` with ``clf``."""

    def __init__(self, method: str, samples: int = FIT_SAMPLES, seed: int = 0, data: Any = None):
        if method not in NETWORK_FITS:
            raise ExplainerError(f"{method} is fitted once per classifier, not per network in a sanity check")
        try:
            samples = int(samples)
        except (TypeError, ValueError):
            raise ExplainerError(f"fit_samples must be a whole number, got {samples!r}") from None
        if samples < 1:
            raise ExplainerError(f"fit_samples must be at least 1, got {samples}")
        self.method, self.spec = method, NETWORK_FITS[method]
        self.samples, self.seed, self.data = samples, int(seed), data
        self._dataset: Any = None
        self._paths: dict[tuple[str, int], Path] = {}
        self._tmp: Optional[tempfile.TemporaryDirectory] = None

    # the images are loaded once and shared by every network's fit
    def _data_for(self, clf: Classifier) -> Any:
        if self._dataset is None:
            data = self.data if self.data is not None else clf.dataset
            if data is None or (isinstance(data, str) and not data):
                raise ExplainerError(
                    f"the sanity check fits {self.method} on every randomised network, and {clf.id} has no built-in "
                    "dataset to fit on; pass fit_data= (a dataset name, an image folder or pixels (N, 3, H, W))")
            if isinstance(data, (str, Path)):
                from .data import load_dataset

                data = load_dataset(data, "train", limit=self.samples)
            self._dataset = data
        return self._dataset

    def params(self, clf: Classifier, target: int, progress: Optional[Callable] = None) -> dict:
        key = (clf.id, int(target))
        if key not in self._paths:
            from .training import get_fitter

            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="explainers-sanity-")
            out = Path(self._tmp.name) / f"fit{len(self._paths)}"
            fitter = get_fitter(self.spec.fitter)
            opts = self.spec.options(int(target), self.samples, self.seed)
            self._paths[key] = Path(fitter.fit(clf, self._data_for(clf), out, progress, **opts))
        return {self.spec.param: str(self._paths[key])}

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        self._paths.clear()

    def __enter__(self) -> "NetworkFits":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


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
    fit: Optional[dict] = None  # methods fitted per network: {"samples": N, "seed": s} of every step's fit

    def as_dict(self) -> dict:
        d = {
            "method": self.method, "map": self.map_name, "target": self.target, "steps": self.steps,
            "spearman": [None if math.isnan(v) else float(v) for v in self.spearman],
            "ssim": [None if math.isnan(v) else float(v) for v in self.ssim],
            "absolute": self.absolute, "seed": self.seed,
        }
        if self.fit is not None:
            d["fit"] = dict(self.fit)
        return d


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
    fit_samples: int = FIT_SAMPLES,
    fit_data: Any = None,
    **params: Any,
) -> SanityResult:
    """The cascading model-parameter randomisation test for one image and one method.

    Step 0 is the original map; step k re-initialises the top k layers (all of them when
    ``steps`` is None). ``target`` defaults to the original model's top-1 class and stays fixed.
    ``params`` go to the method (as in :func:`explainers.explain`).

    A method in :data:`NETWORK_FITS` (MIP-IN) is fitted on every network, the original included,
    the same way: target class only, the first ``fit_samples`` images of ``fit_data`` (default:
    the classifier's dataset, train split), seed ``seed`` (see the module docstring)."""
    name = _map_name(method, map_name)
    x = as_pixels(clf, image)
    fits: Optional[NetworkFits] = None
    if needs_network_fit(method):
        param = NETWORK_FITS[method].param
        if params.get(param) not in (None, ""):
            raise ExplainerError(
                f"the sanity check fits {method} on every network itself (fit_samples={fit_samples}); "
                f"a given {param}= was made for one network only — leave it out")
        params.pop(param, None)
        fits = NetworkFits(method, fit_samples, seed, fit_data)
    try:
        layers = parameter_layers(clf)
        total = (len(layers) if steps is None else max(0, min(int(steps), len(layers)))) + 1

        def explain_on(c: Classifier, t: Optional[int | str], k: int, label: str):
            """The explanation on network ``c`` (step ``k``), with its own fit where the method needs one."""
            extra = {}
            if fits is not None:
                tt = c.label_index(t, x.to(c.device))
                report(progress, k, total, f"{label}: fitting {method} on {fits.samples} images")
                fit_progress = None if progress is None else (lambda d, n, m="": report(progress, k, total, f"{label}: fitting {method} ({d}/{n})"))
                extra = fits.params(c, tt, fit_progress)  # this network's own fit: never the original's
                t = tt
            return explain(c, x, method, target=t, **params, **extra)

        base = explain_on(clf, target, 0, "original")
        t = int(base.meta["target"])
        orig = base.maps[name]
        labels, maps, rho, ssim = ["original"], [orig], [1.0], [1.0]
        report(progress, 1, total, "original")
        for k, names, rclf in randomised_copies(clf, seed, steps):
            try:
                m = explain_on(rclf, t, k, names[0]).maps[name]
            except ExplainerError as e:
                raise ExplainerError(f"sanity check, {method} with the top {k} layer(s) randomised: {e}") from None
            sim = similarity(orig, m, absolute)
            labels.append(names[0])
            maps.append(m)
            rho.append(sim["spearman"])
            ssim.append(sim["ssim"])
            report(progress, k + 1, total, names[0])
    finally:
        if fits is not None:
            fits.close()
    fit_info = None if fits is None else {"samples": fits.samples, "seed": fits.seed}
    return SanityResult(method, name, t, labels, np.array(rho), np.array(ssim), maps, absolute, int(seed), fit_info)


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
    "FIT_SAMPLES", "NETWORK_FITS", "NetworkFit", "NetworkFits", "SanityResult", "cascading_randomisation",
    "fully_randomised", "label_sensitivity", "needs_network_fit", "parameter_layers", "randomised_copies",
    "reinitialise", "similarity",
]
