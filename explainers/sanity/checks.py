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
from .network_fits import FIT_SAMPLES, NETWORK_FITS, NetworkFits, needs_network_fit
from .randomise import parameter_layers, randomised_copies


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
