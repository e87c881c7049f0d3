"""The checks: cascading randomisation and label sensitivity, compared with :func:`similarity`."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from ..classifiers.base import Classifier
from ..core import as_pixels, explain, get_method
from ..errors import ExplainerError
from ..progress import report
from .randomise import parameter_layers, randomised_copies
from .same_way import SameWay
from .similarity import similarity


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
    fit: Optional[dict] = None  # methods refitted per network: how every step's fit was made (NetworkFits.info)
    # the reference: the original map against a second run on the unchanged network made the same way
    # (seed + 1, or a second fit): a randomised step is only a change where it is clearly below it
    reference_spearman: float = float("nan")
    reference_ssim: float = float("nan")
    reference_map: Optional[np.ndarray] = None
    how: str = ""  # how every step's map was made, in words
    reference_how: str = ""

    def as_dict(self) -> dict:
        def num(v: float):
            return None if math.isnan(v) else float(v)

        d = {
            "method": self.method, "map": self.map_name, "target": self.target, "steps": self.steps,
            "spearman": [num(v) for v in self.spearman], "ssim": [num(v) for v in self.ssim],
            "absolute": self.absolute, "seed": self.seed,
            "reference": {"spearman": num(self.reference_spearman), "ssim": num(self.reference_ssim), "how": self.reference_how},
            "how": self.how,
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
    fit_samples: Optional[int] = None,
    fit_data: Any = None,
    fit_options: Optional[dict] = None,
    method_params: Optional[dict] = None,
    **params: Any,
) -> SanityResult:
    """The cascading model-parameter randomisation test for one image and one method.

    Step 0 is the original map; step k re-initialises the top k layers (all of them when
    ``steps`` is None). ``target`` defaults to the original model's top-1 class and stays fixed.
    ``params`` go to the method (as in :func:`explainers.explain`), and so does ``method_params``
    (for names this function has too: VarSal's ``steps``).

    Every step's map is made the same way (:class:`~explainers.sanity.same_way.SameWay`): a method
    whose fitted part is in use (MIP-IN; VarSal and the controller unless ``params`` ask for their
    per-image mode) is refitted on every network, the original included, on the first
    ``fit_samples`` images of ``fit_data`` (default: the classifier's dataset, train split), seed
    ``seed``, with the fitter's short options (``fit_options`` override them). The result carries
    the reference: the original map against a second run on the unchanged network made the same
    way (``reference_spearman``)."""
    name = _map_name(method, map_name)
    x = as_pixels(clf, image)
    params = {**params, **(method_params or {})}
    way = SameWay(method, params, seed, fit_samples, fit_data, fit_options)
    try:
        layers = parameter_layers(clf)
        total = (len(layers) if steps is None else max(0, min(int(steps), len(layers)))) + 2

        def explain_on(c: Classifier, t: Optional[int | str], k: int, label: str, variant: str = "main"):
            fp = None
            if way.fits is not None:
                report(progress, k, total, f"{label}: fitting {method} on {way.fits.samples} images")
                fp = None if progress is None else (lambda d, n, m="": report(progress, k, total, f"{label}: fitting {method} ({d}/{n})"))
            return way.explain(c, x, t, variant, fp)

        base = explain_on(clf, target, 0, "original")
        t = int(base.meta["target"])
        orig = base.maps[name]
        report(progress, 1, total, "original")
        ref = explain_on(clf, t, 1, "reference (unchanged network)", "reference").maps[name]
        rsim = similarity(orig, ref, absolute)
        labels, maps, rho, ssim = ["original"], [orig], [1.0], [1.0]
        report(progress, 2, total, "reference")
        for k, names, rclf in randomised_copies(clf, seed, steps):
            try:
                m = explain_on(rclf, t, k + 1, names[0]).maps[name]
            except ExplainerError as e:
                raise ExplainerError(f"sanity check, {method} with the top {k} layer(s) randomised: {e}") from None
            sim = similarity(orig, m, absolute)
            labels.append(names[0])
            maps.append(m)
            rho.append(sim["spearman"])
            ssim.append(sim["ssim"])
            report(progress, k + 2, total, names[0])
        how, ref_how, fit_info = way.how, way.reference_how, way.fit_info
    finally:
        way.close()
    return SanityResult(method, name, t, labels, np.array(rho), np.array(ssim), maps, absolute, int(seed), fit_info,
                        rsim["spearman"], rsim["ssim"], ref, how, ref_how)


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
