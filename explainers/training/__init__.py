"""Fitting the amortised parts of the explainers (``python -m explainers fit``).

Each fittable explainer registers a :class:`Fitter`: a function
``fit(clf, data, out_dir, progress, **options) -> Path`` that trains on a dataset (see
``explainers.data.load_dataset``), writes ``<name>.safetensors`` with its config beside it as
``<name>.json`` in ``out_dir`` and returns the weights path. Training resumes from
``<name>.ckpt.safetensors`` in ``out_dir`` when one is there.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..errors import ExplainerError

ASSETS = Path(__file__).resolve().parents[2] / "assets"


@dataclass(frozen=True)
class Fitter:
    name: str
    fit: Callable
    needs_model: bool = True  # the PatchSampler is fitted per dataset, not per classifier
    help: str = ""


FITTERS: dict[str, Fitter] = {}


def register_fitter(f: Fitter) -> Fitter:
    FITTERS[f.name] = f
    return f


def get_fitter(name: str) -> Fitter:
    from .. import methods  # noqa: F401  (method modules register their fitters)

    if name not in FITTERS:
        known = ", ".join(sorted(FITTERS)) or "none"
        raise ExplainerError(f"unknown explainer to fit {name!r}; known: {known}")
    return FITTERS[name]


def fitted_dir(key: str) -> Path:
    """Where fitted explainer parts for a classifier id (or a dataset name) are kept."""
    return ASSETS / "explainers" / key


def user_fitted_dir(key: str) -> Optional[Path]:
    """Fits made by users go to ``$EXPLAINERS_HOME/fitted/<key>`` (default ``~/.cache/explainers``)."""
    import os

    home = Path(os.environ.get("EXPLAINERS_HOME", Path.home() / ".cache" / "explainers"))
    return home / "fitted" / key
