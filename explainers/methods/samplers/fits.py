"""Finding and loading fitted samplers (the PatchSampler network is in ``network``, the
conditional Gaussian in ``gaussian``).

Fitted samplers are per data and per K: ``patchsampler.safetensors`` / ``gaussian.safetensors`` at
the paper's K = 8, ``*_k{K}.safetensors`` for others, in the user's folder first, then the committed
one (``explainers.fitted.search_dirs("samplers/<data>")``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ... import fitted
from ...errors import ExplainerError
from .network import PatchSamplerNet

ARCH = "linear-groups6-dlogistic"  # the card's ``arch``: the network of ``network.py``
DEFAULT_K = 8  # the K whose fitted files carry no suffix (the paper's default)
COMMITTED = fitted.committed_dir("samplers")  # the project's fits, one folder per data key


# ---------------------------------------------------------------------------------------------
# finding and loading fitted samplers
# ---------------------------------------------------------------------------------------------
def data_key(data: str) -> str:
    """The key a sampler fitted on ``data`` is saved under: a folder's name, else the data key itself."""
    p = Path(data).expanduser()
    return p.name if p.is_dir() else data


def sampler_key(clf: Any) -> str:
    """Which fitted samplers a classifier uses: its dataset's, else the natural-photo ones.

    ``shapes-two`` / ``shapes-biased`` fall back to ``shapes`` when they have none of their own;
    torchvision and user models use ``photos`` (fitted on scikit-image's photographs).
    """
    ds = getattr(clf, "dataset", None)
    if ds:
        for key in (ds, ds.split("-")[0]):
            if _candidates(key):
                return key
        return ds.split("-")[0]
    return "photos"


def _candidates(key: str) -> list[Path]:
    p = Path(key).expanduser()
    if p.is_dir():
        return [p]
    return [d for d in fitted.search_dirs(f"samplers/{key}") if d.is_dir()]


def fitted_name(kind: str, K: int) -> str:
    """File stem of a fitted sampler: ``patchsampler`` at the default K, ``patchsampler_k4`` otherwise."""
    return kind if K == DEFAULT_K else f"{kind}_k{K}"


def find_fitted(kind: str, key: str, K: int) -> Path:
    """Path of the fitted ``kind`` (patchsampler | gaussian) for data ``key`` and patch size K."""
    name = fitted_name(kind, K)
    for d in _candidates(key):
        path = d / f"{name}.safetensors"
        if path.exists() and path.with_suffix(".json").exists():
            return path
    have = sorted(
        {json.loads(p.read_text()).get("config", {}).get("K") for d in _candidates(key) for p in d.glob(f"{kind}*.json")}
        - {None}
    )
    where = f"there is one for K = {', '.join(map(str, have))}" if have else "none is fitted for this data"
    raise ExplainerError(
        f"no {kind} fitted for data {key!r} at K={K} ({where}); fit one with "
        f"`python -m explainers fit --explainer patchsampler --data {key} --set K={K}`, or pick another sampler"
    )


def _build_patchsampler(card: dict) -> PatchSamplerNet:
    cfg = card["config"]
    if cfg.get("arch") != ARCH:
        raise ExplainerError(
            f"this PatchSampler was fitted for an older network ({cfg.get('arch', 'independent 256-way pixels')}); refit it "
            f"with `python -m explainers fit --explainer patchsampler --data {card.get('data', 'SOURCE')} --set K={cfg['K']}`"
        )
    return PatchSamplerNet(int(cfg["K"]), int(cfg["channels"]), int(cfg["width"]), int(cfg["head"]), int(cfg["mixtures"]),
                           bool(cfg.get("coherent", True)))


def load_patchsampler(path: str, device: str) -> PatchSamplerNet:
    """The fitted PatchSampler at ``path`` on ``device`` (loaded once per file version; never modified)."""
    return fitted.load_frozen(path, device, _build_patchsampler)[0]
