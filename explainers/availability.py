"""Which methods a classifier can run, told before anything fails (the method picker's marks).

:func:`method_status` gives, per registered method, whether a run would start (``cost.estimate``'s
``blocked``, the same check the grid makes before a run), why not and the fix; and for the
amortised methods whose fit this network does not have, what the fit would change (from a
per-image optimisation to one pass, or from unavailable to available), the ``fit`` command that
makes it and its estimated time. The fit times count classifier passes only (as ``explainers.cost``
does) from the fitters' default options for ``FIT_IMAGES`` training images: a lower bound.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Optional

from . import cost
from .classifiers.base import Classifier
from .core import METHODS, get_method
from .errors import ExplainerError, one_line

FIT_IMAGES = 1000  # training images the fit-time estimates assume (an image folder's size is unknown before a fit)
LAYER_METHODS = ("gradcam", "mipin")  # methods that hook or walk the network's layers
_COMMAND = re.compile(r"`(python -m explainers [^`]+)`")


@dataclass(frozen=True)
class MethodStatus:
    method: str
    title: str
    available: bool
    reason: str = ""  # why it cannot run ("" when it can)
    fix: str = ""  # what would make it run
    fit: str = ""  # what a fit this network does not have would change ("" when none is missing)
    fit_command: str = ""
    fit_seconds: Optional[float] = None  # estimated, classifier passes only, for FIT_IMAGES images
    seconds: Optional[float] = None  # expected seconds of one run here (when rates are given)

    def line(self) -> str:
        """One line for the picker."""
        if not self.available:
            return f"unavailable: {self.reason}" + (f" — fix: {self.fix}" if self.fix and self.fix not in self.reason else "")
        return "available" + (f"; {self.fit}" if self.fit else "")


def fit_passes(explainer: str) -> tuple[int, int]:
    """(forwards, forward+backward passes) of the classifier that ``fit --explainer`` makes with its
    default options on ``FIT_IMAGES`` images."""
    if explainer == "varsal":
        from .training.varsal import TrainConfig

        c = TrainConfig()
        return 0, int(c.steps) * int(c.batch_size)
    if explainer == "dcontrol":
        from .training.dcontrol import FitOptions

        c = FitOptions()
        return 0, int(c.epochs) * FIT_IMAGES + int(c.filter_steps) * int(c.batch_size)
    if explainer == "mipin":
        from .training.mipin import MIPINFitOptions

        c = MIPINFitOptions()
        return FIT_IMAGES + int(c.holdout), 0
    return 0, 0


def _fit_seconds(explainer: str, rates: Optional[cost.Rates]) -> Optional[float]:
    if rates is None:
        return None
    f, b = fit_passes(explainer)
    return f / max(rates.forward, 1e-9) + b / max(rates.backward, 1e-9)


def _fit_command(explainer: str, clf: Classifier) -> str:
    return f"python -m explainers fit --explainer {explainer} --model {clf.id} --data {clf.dataset or 'FOLDER'}"


def _duration(s: Optional[float]) -> str:
    if s is None:
        return ""
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"


def _missing_fit(clf: Classifier, method: str) -> Optional[str]:
    """For a method that runs without its fit (per-image instead), what the fit would change."""
    try:
        if method == "varsal":
            from .methods.varsal.method import _choose

            path, why = _choose(clf, get_method(method).config())
            return None if path is not None else f"{why}; a fitted encoder makes it one pass"
        if method == "dcontrol":
            from .methods.dcontrol.store import choose_generator

            got = choose_generator(clf, get_method(method).config())
            return None if got is not None else "the controller optimises per image (no fitted generator); a fitted generator makes it one pass"
    except ExplainerError:
        return None
    return None


def method_status(clf: Classifier, methods: Optional[list[str]] = None, rates: Optional[cost.Rates] = None) -> list[MethodStatus]:
    """The status of each of ``methods`` (default: every registered one) for ``clf``, at the methods'
    default settings. ``rates`` (``cost.forwards_per_second(clf)``) adds expected seconds."""
    from .methods.layers import hidden

    layers_hidden = hidden(clf.net)
    out = []
    for m in methods or sorted(METHODS):
        spec = get_method(m)
        c = cost.estimate(clf, m)
        seconds = c.seconds(rates) if rates is not None else None
        if c.blocked:
            fix, cmd = "", ""
            found = _COMMAND.search(c.blocked)
            if m in LAYER_METHODS and layers_hidden:
                fix = layers_hidden
            elif found and "fit" in found.group(1):
                cmd = found.group(1)
                fix = f"run `{cmd}`"
            elif m == "mipin":
                fix = "MIP-IN inverts nn.Sequential networks and a Sequential classifier head on convolutional features; use another method"
            explainer = cmd.split("--explainer ")[1].split()[0] if "--explainer " in cmd else ""
            fs = _fit_seconds(explainer, rates) if explainer else None
            fit = f"needs a fit: `{cmd}`" + (f" (about {_duration(fs)} for {FIT_IMAGES:,} images)" if fs else "") if cmd else ""
            out.append(MethodStatus(m, spec.title, False, one_line(c.blocked, 600), fix, fit, cmd, fs, seconds))
            continue
        change = _missing_fit(clf, m) if spec.needs_fit else None
        if change:
            cmd = _fit_command(m, clf)
            fs = _fit_seconds(m, rates)
            when = f" (about {_duration(fs)} for {FIT_IMAGES:,} images)" if fs else ""
            out.append(MethodStatus(m, spec.title, True, fit=f"{change}: `{cmd}`{when}", fit_command=cmd, fit_seconds=fs,
                                    seconds=seconds))
        else:
            out.append(MethodStatus(m, spec.title, True, seconds=seconds))
    return out


def as_dicts(rows: list[MethodStatus]) -> list[dict]:
    return [dataclasses.asdict(r) for r in rows]
