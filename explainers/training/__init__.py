"""Fitting the amortised parts of the explainers (``python -m explainers fit``).

Each fittable explainer has a :class:`Fitter` in the static table ``FITTERS`` below: a function
``fit(clf, data, out_dir, progress, **options) -> Path`` that trains on a dataset (see
``explainers.data.load_dataset``), writes ``<name>.safetensors`` with its card beside it as
``<name>.json`` in ``out_dir`` (default: the user's fit folder, ``explainers.fitted.user_dir``) and
returns the weights path. Training resumes from ``<name>.ckpt.safetensors`` in ``out_dir``.

Dependencies run one way: ``training`` → ``methods`` → ``core`` → ``classifiers`` → ``data``; the
methods never import this package (they find fits through ``explainers.fitted``).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from ..errors import ExplainerError


@dataclass(frozen=True)
class Fitter:
    name: str
    module: str  # the training module whose ``fit`` function does the work
    needs_model: bool = True  # the PatchSampler is fitted per dataset, not per classifier
    help: str = ""

    @property
    def fit(self) -> Callable:
        return importlib.import_module(f"{__name__}.{self.module}").fit


FITTERS: dict[str, Fitter] = {
    f.name: f
    for f in (
        Fitter("patchsampler", "patchsampler", needs_model=False,
               help="PMI's PatchSampler and conditional Gaussian for a dataset (Appendix B.C)"),
        Fitter("varsal", "varsal", help="VarSal's amortised encoder (Appendix C)"),
        Fitter("dcontrol", "dcontrol", help="the distribution controller's mask generator (Eq. 4)"),
        Fitter("mipin", "mipin", help="MIP-IN's layer-wise inverses (Eq. 5–8), per class"),
    )
}


def get_fitter(name: str) -> Fitter:
    if name not in FITTERS:
        raise ExplainerError(f"unknown explainer to fit {name!r}; known: {', '.join(sorted(FITTERS))}")
    return FITTERS[name]
