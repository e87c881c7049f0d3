"""Making a method's maps the same way on every network of a sanity check, and the reference: a
second run on the *unchanged* network made the same way (the method's own noise).

- Per-image methods (and VarSal / the controller when their parameters ask for the per-image
  mode): the same parameters on every network. Reference: the same parameters with seed + 1 when
  the method has a ``seed`` (its random draws: noise, masks, initial maps); a method without one is
  run twice (deterministic: the reference ρ is 1 up to floating-point noise).
- Methods with a fitted part in use (MIP-IN always; VarSal's encoder, the controller's generator):
  refitted on every network (:class:`~explainers.sanity.network_fits.NetworkFits`). Reference: a
  second fit on the unchanged network.

An amortised map depends on the classifier only through its fit: VarSal's encoder never calls the
classifier at all (with the committed encoder its map cannot change when the classifier's weights
are randomised), the controller's generator reads the classifier's features, MIP-IN's inverses are
gated by its forward pass. Hence the refit.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..classifiers.base import Classifier
from ..core import explain, get_method
from ..errors import ExplainerError
from .similarity import similarity
from .network_fits import NETWORK_FITS, NetworkFits, needs_network_fit
from .randomise import fully_randomised


def seed_of(method: str, params: dict) -> Optional[int]:
    """The method's seed under ``params`` (its config's default when not given), None without one."""
    fields = {f.name: f for f in dataclasses.fields(get_method(method).config)}
    if "seed" not in fields:
        return None
    v = params.get("seed")
    return int(fields["seed"].default if v in (None, "") else v)


class SameWay:
    """A method's maps made the same way on any network (see the module docstring).

    ``explain(clf, x, target, variant="main" | "reference")``; ``how`` and ``reference_how`` say in
    words how; ``fit_info`` describes the fits (None for per-image methods). Close it (or use
    ``with``) to remove the temporary fits."""

    def __init__(self, method: str, params: Optional[dict] = None, seed: int = 0, fit_samples: Optional[int] = None,
                 fit_data: Any = None, fit_options: Optional[dict] = None):
        self.method, self.params = method, dict(params or {})
        self.fits: Optional[NetworkFits] = None
        if needs_network_fit(method, self.params):
            param = NETWORK_FITS[method].param
            if self.params.get(param) not in (None, ""):
                raise ExplainerError(
                    f"the sanity check fits {method} on every network itself; a given {param}= was made for one "
                    "network only — leave it out" + ("" if method == "mipin" else
                                                     " (or ask for the per-image mode, made the same way on every network)"))
            self.params.pop(param, None)
            self.fits = NetworkFits(method, fit_samples, seed, fit_data, fit_options, self.params)
        self.seed = seed_of(method, self.params) if self.fits is None else None

    @property
    def how(self) -> str:
        if self.fits is not None:
            return self.fits.describe()
        extra = ", ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.method} per image on each network" + (f" ({extra})" if extra else "")

    @property
    def reference_how(self) -> str:
        if self.fits is not None:
            return self.fits.reference_how
        if self.seed is None:
            return "the same run again (the method has no seed: deterministic)"
        return f"seed {self.seed + 1} instead of {self.seed}"

    @property
    def fit_info(self) -> Optional[dict]:
        return None if self.fits is None else self.fits.info()

    def explain(self, clf: Classifier, x: torch.Tensor, target: Optional[int | str], variant: str = "main",
                progress: Optional[Callable] = None):
        p = dict(self.params)
        if self.fits is not None:
            t = clf.label_index(target, x.to(clf.device))
            p.update(self.fits.params(clf, t, progress, variant))
            target = t
        elif variant == "reference" and self.seed is not None:
            p["seed"] = self.seed + 1
        return explain(clf, x, self.method, target=target, **p)

    def close(self) -> None:
        if self.fits is not None:
            self.fits.close()

    def __enter__(self) -> "SameWay":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class FullRandomisation:
    """The evaluation's sanity figures for one method on many images: the map against the fully
    randomised network's (``spearman``) and against a second run on the unchanged network made the
    same way (``reference``), per image. Built once per run (the randomised copy, the fits)."""

    def __init__(self, clf: Classifier, method: str, map_name: str, params: Optional[dict] = None, seed: int = 0, **fit: Any):
        self.clf, self.map_name = clf, map_name
        self.rclf = fully_randomised(clf, seed)
        self.way = SameWay(method, params, seed, **fit)
        self._memo: tuple[Any, dict] = (None, {})

    def compare(self, x: torch.Tensor, target: int, original: Optional[np.ndarray] = None) -> dict:
        """``{"spearman", "ssim", "reference", "reference_ssim"}`` for one image (x: (3, H, W) in [0, 1]).
        ``original``: the map already made with the same parameters on the unchanged network (reused
        by per-image methods; a refitted method makes its own with its own fit)."""
        x = x.detach().cpu()
        key = (int(target), hashlib.sha256(x.numpy().tobytes()).hexdigest())
        if self._memo[0] == key:
            return self._memo[1]
        if original is None or self.way.fits is not None:
            original = self.way.explain(self.clf, x, target).maps[self.map_name]
        rand = self.way.explain(self.rclf, x, target).maps[self.map_name]
        ref = self.way.explain(self.clf, x, target, "reference").maps[self.map_name]
        a, b = similarity(original, rand), similarity(original, ref)
        out = {"spearman": a["spearman"], "ssim": a["ssim"], "reference": b["spearman"], "reference_ssim": b["ssim"]}
        self._memo = (key, out)
        return out

    def close(self) -> None:
        self.way.close()
