"""Fits made on the spot on every network of a sanity check, so that the original and each randomised
network's maps are made the same way (see the package docstring).

- MIP-IN has no per-image mode: its map *is* a fit to the network (Algorithm 1), always refitted.
- VarSal's encoder and the distribution controller's generator are amortised: unless the method's
  parameters ask for the per-image mode (VarSal ``mode=per-image``, the controller's
  ``generator=optimise``), the check refits them on every network with a *short* fit
  (:data:`NETWORK_FITS` gives its size) instead of comparing the committed fit's map with a
  per-image map (a mode switch that alone dropped Spearman ρ to 0.45, issue 19).

Every fit of a check is made the same way: the same images, options and seed; only the network's
weights differ. The *reference* fit (the method's own fit-to-fit noise, on the unchanged network)
differs in the one thing that a refit would change: the next ``samples`` images for MIP-IN (a
closed-form fit: a seed only moves its sampled positions), seed + 1 for the trained encoder and
generator (initialisation, order and draws). Fits live in a private temporary directory.
"""
from __future__ import annotations

import json
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..classifiers.base import Classifier
from ..data import Dataset
from ..errors import ExplainerError


def _mipin_on(params: dict) -> bool:
    return True


def _varsal_on(params: dict) -> bool:
    return str(params.get("mode") or "auto") != "per-image"


def _dcontrol_on(params: dict) -> bool:
    return str(params.get("generator") or "auto") != "optimise"


@dataclass(frozen=True)
class NetworkFit:
    """How a method's fitted part is refitted on every network of a sanity check.

    ``fitter``: its entry in ``explainers.training.FITTERS``; ``param``: the method parameter that
    takes the fitted file; ``samples``: training images per fit (default); ``short``: the fitter's
    options for a sanity fit (on top of the committed fit's own ``--set`` options, read from its
    card, so that a short fit is trained like the committed one, only shorter); ``carried``: the
    method parameters the fit is trained with (the objective's knobs); ``per_class``: one fit per
    target class (MIP-IN); ``reference``: ``"disjoint"`` (the next ``samples`` images) or
    ``"seed"`` (seed + 1); ``applies(params)``: whether the method's parameters use the fit at all
    (not its per-image mode); ``what``: the fitted part, in words."""

    fitter: str
    param: str
    samples: int
    short: dict = field(default_factory=dict)
    carried: tuple[str, ...] = ()
    per_class: bool = False
    reference: str = "seed"
    applies: Callable[[dict], bool] = _mipin_on
    what: str = ""
    by_name: bool = False  # the fitter reads a dataset name or folder (not a Dataset object)
    pixels: bool = True  # ... or pixels (N, 3, H, W)


NETWORK_FITS: dict[str, NetworkFit] = {
    # Algorithm 1: one inverse per target class, only the target's is fitted; 2,000 images: two fits on
    # disjoint images then agree at rho >= 0.8 (measured: README, issue 18); no held-out R2 (not needed here)
    "mipin": NetworkFit("mipin", "fit", 2000, {"holdout": 0}, per_class=True, reference="disjoint",
                        what="MIP-IN's inverse (closed form, Algorithm 1)"),
    # short fits: ~100 steps of 32 images (shapes-resnet's committed encoder: 650), about 50 s on one CPU thread
    "varsal": NetworkFit("varsal", "encoder", 2000, {"steps": 100, "eval_every": 50, "checkpoint_every": 1000, "val_size": 64},
                         carried=("alpha", "beta", "baseline", "k_min", "k_max", "topk_eps", "sinkhorn_iters", "blur_sigma", "noise_std"),
                         applies=_varsal_on, what="VarSal's encoder (short fit)", by_name=True, pixels=False),
    # short fits: one epoch over 1,000 images after 100 filter steps (shapes-resnet's committed one: 6 epochs of 6,000), ~15 s
    "dcontrol": NetworkFit("dcontrol", "fit", 1000, {"epochs": 1, "filter_steps": 100, "val_size": 64, "checkpoint_every": 10_000},
                           carried=("transformer", "eta", "h", "p_blur", "blur_sigma", "noise_std"),
                           applies=_dcontrol_on, what="the controller's generator (short fit)", by_name=True),
}
FIT_SAMPLES = NETWORK_FITS["mipin"].samples  # MIP-IN's images per fit (the name callers used before the table)


def needs_network_fit(method: str, params: Optional[dict] = None) -> bool:
    """Whether the sanity check refits ``method``'s fitted part on every network (MIP-IN always;
    VarSal and the controller unless ``params`` ask for their per-image mode)."""
    spec = NETWORK_FITS.get(method)
    return spec is not None and spec.applies(dict(params or {}))


def committed_options(method: str, clf_id: str) -> dict:
    """The ``--set`` options of the classifier's committed (or user) fit's command, from its card
    ({} without one): a sanity fit is trained like it, only shorter."""
    from .. import fitted

    names = {"varsal": "varsal.json", "dcontrol": "dcontrol-customised.json"}
    if method not in names:
        return {}
    for p in fitted.candidates(clf_id, names[method]):
        try:
            words = shlex.split(json.loads(Path(p).read_text()).get("command") or "")
        except (OSError, ValueError):
            continue
        out = {}
        for a, b in zip(words, words[1:]):
            if a == "--set" and "=" in b:
                k, v = b.split("=", 1)
                out[k] = v
        return out
    return {}


class _Offset(Dataset):
    """Items ``start``.. of a dataset (the reference fit's disjoint images)."""

    def __init__(self, ds: Any, start: int):
        self.ds, self.start = ds, int(start)
        self.name, self.split = getattr(ds, "name", "?"), getattr(ds, "split", "?")
        self.classes = list(getattr(ds, "classes", []) or [])

    def __len__(self) -> int:
        return max(0, len(self.ds) - self.start)

    def _item(self, i: int):
        return self.ds[self.start + i]


class NetworkFits:
    """On-the-spot fits of one method (an entry of :data:`NETWORK_FITS`), one per (network, class,
    variant), all made the same way: the first ``samples`` images of ``data`` (default: the
    classifier's built-in dataset, train split), the fitter's short options (``options`` override
    them), ``seed``; the ``"reference"`` variant is the second fit on the same network (see the
    module docstring). Written to a private temporary directory, reused for the same classifier id;
    :meth:`close` (or leaving a ``with`` block, or garbage collection) removes it.

    ``params(clf, target, progress, variant)`` fits if needed and returns the method parameters that
    select the fit, to pass to :func:`explainers.explain` with ``clf``."""

    def __init__(self, method: str, samples: Optional[int] = None, seed: int = 0, data: Any = None,
                 options: Optional[dict] = None, method_params: Optional[dict] = None):
        if method not in NETWORK_FITS:
            raise ExplainerError(f"{method} is fitted once per classifier, not per network in a sanity check")
        self.method, self.spec = method, NETWORK_FITS[method]
        samples = self.spec.samples if samples is None else samples
        try:
            samples = int(samples)
        except (TypeError, ValueError):
            raise ExplainerError(f"fit_samples must be a whole number, got {samples!r}") from None
        if samples < 1:
            raise ExplainerError(f"fit_samples must be at least 1, got {samples}")
        self.samples, self.seed, self.data = samples, int(seed), data
        self.extra = dict(options or {})
        mp = dict(method_params or {})
        self.carried = {k: mp[k] for k in self.spec.carried if mp.get(k) not in (None, "")}
        self._dataset: Any = None
        self._paths: dict[tuple, Path] = {}
        self.used: dict[str, int] = {}  # images each variant was fitted on
        self._tmp: Optional[tempfile.TemporaryDirectory] = None

    @property
    def reference_how(self) -> str:
        return (f"a second fit on the next {self.samples} images" if self.spec.reference == "disjoint"
                else f"a second fit with seed {self.seed + 1}")

    def options_for(self, clf: Classifier, target: Optional[int], variant: str = "main") -> dict:
        """The fitter's options of one fit: the committed fit's, the short fit's, then the caller's."""
        opts = {**committed_options(self.method, clf.id.split("~")[0]), **self.spec.short, **self.carried, **self.extra}
        opts["seed"] = self.seed + (1 if variant == "reference" and self.spec.reference == "seed" else 0)
        opts["limit"] = self.samples
        if self.spec.per_class:
            opts["classes"] = str(int(target))
        return opts

    def describe(self) -> str:
        ex = ", ".join(f"{k}={v}" for k, v in {**self.spec.short, **self.extra}.items() if k not in ("checkpoint_every", "eval_every", "val_size"))
        return (f"{self.spec.what} refitted on each network: the first {self.samples} training images, seed {self.seed}"
                + (f", {ex}" if ex else ""))

    def info(self) -> dict:
        return {"fitter": self.spec.fitter, "samples": self.samples, "seed": self.seed,
                "options": {k: v for k, v in {**self.spec.short, **self.carried, **self.extra}.items()},
                "reference": self.reference_how, "images_used": dict(self.used)}

    def _data_for(self, clf: Classifier) -> Any:
        """The fitter's data (loaded once for every network): a Dataset of 2x ``samples`` images
        (the reference's disjoint ones behind), pixels, or a dataset name for fitters that read one."""
        if self._dataset is None:
            data = self.data if self.data is not None else clf.dataset
            if data is None or (isinstance(data, str) and not data):
                raise ExplainerError(
                    f"the sanity check fits {self.method} on every network, and {clf.id} has no built-in "
                    "dataset to fit on; pass fit_data= (a dataset name, an image folder or pixels (N, 3, H, W))")
            if self.spec.by_name:
                if not isinstance(data, (str, Path)) and not (self.spec.pixels and hasattr(data, "shape")):
                    raise ExplainerError(f"the {self.method} fitter reads a dataset name or an image folder; fit_data={type(data).__name__} cannot be used")
            elif isinstance(data, (str, Path)):
                from ..data import load_dataset

                n = 2 * self.samples if self.spec.reference == "disjoint" else self.samples
                data = load_dataset(data, "train", limit=n)
            self._dataset = data
        return self._dataset

    def _variant_data(self, clf: Classifier, variant: str) -> Any:
        data = self._data_for(clf)
        if variant == "reference" and self.spec.reference == "disjoint":
            data = data[self.samples:] if not isinstance(data, Dataset) else _Offset(data, self.samples)
            if len(data) < 1:
                raise ExplainerError(f"the reference fit of {self.method} needs more than {self.samples} training images")
        return data

    def params(self, clf: Classifier, target: Optional[int] = None, progress: Optional[Callable] = None,
               variant: str = "main") -> dict:
        key = (clf.id, int(target) if self.spec.per_class else None, variant)
        if key not in self._paths:
            from ..training import get_fitter

            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="explainers-sanity-")
            out = Path(self._tmp.name) / f"fit{len(self._paths)}"
            data = self._variant_data(clf, variant)
            opts = self.options_for(clf, target, variant)
            self.used[variant] = min(self.samples, len(data)) if not isinstance(data, (str, Path)) else self.samples
            self._paths[key] = Path(get_fitter(self.spec.fitter).fit(clf, data, out, progress, **opts))
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
