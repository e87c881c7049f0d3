"""Datasets in memory: :class:`Item`, :class:`Dataset`, :class:`ArrayDataset`, and the ``.npz``
cache of generated splits under ``$EXPLAINERS_HOME/datasets/``."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Callable, Iterator, Optional, Union

import numpy as np
from PIL import Image

from ..errors import ExplainerError

Box = tuple[int, int, int, int]
BUILTINS = ("shapes", "shapes-two", "shapes-biased", "digits")
SPLITS = ("train", "val", "test")


@dataclass
class Item:
    """One example: an RGB image, its label (class index) and, where known, the object's mask
    (bool (H, W), union of the objects) and box ``(x0, y0, x1, y1)`` with x1/y1 exclusive."""

    image: Image.Image
    label: int
    mask: Optional[np.ndarray] = None
    box: Optional[Box] = None
    extra: dict = field(default_factory=dict)


class Dataset(Sequence):
    """A sequence of :class:`Item`, with ``name``, ``split``, ``classes`` and ``info`` (a dict)."""

    name: str
    split: str
    classes: list[str]
    info: dict

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _item(self, i: int) -> Item:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._item(j) for j in range(*i.indices(len(self)))]
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {n} items")
        return self._item(i)

    def __iter__(self) -> Iterator[Item]:
        for i in range(len(self)):
            yield self._item(i)

    @property
    def labels(self) -> np.ndarray:
        """int64 (N,) class indices."""
        raise NotImplementedError  # pragma: no cover

    def arrays(self, size: Optional[tuple[int, int]] = None, progress: Optional[Callable] = None) -> tuple[np.ndarray, np.ndarray]:
        """All images as uint8 (N, H, W, 3) and labels as int64 (N,); ``size=(H, W)`` resizes."""
        raise NotImplementedError  # pragma: no cover

    def masks(self) -> Optional[np.ndarray]:
        """bool (N, H, W) ground-truth masks, or None if unknown."""
        return None

    def boxes(self) -> Optional[np.ndarray]:
        """int64 (N, 4) boxes ``(x0, y0, x1, y1)``, or None if unknown."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, split={self.split!r}, n={len(self)}, classes={len(self.classes)})"


def _extra_value(key: str, v: np.ndarray):
    if v.ndim == 0:
        return bool(v) if v.dtype == bool else v.item()
    if key == "boxes":
        return v.tolist()
    if v.ndim == 1 and v.dtype.kind in "iu":
        return tuple(int(t) for t in v)
    return v.copy()


class ArrayDataset(Dataset):
    """An in-memory dataset: images uint8 (N, H, W, 3) of one size, labels, optional masks/boxes,
    and ``extras``: per-item arrays (first axis N) that fill ``Item.extra`` under the same keys."""

    def __init__(
        self,
        name: str,
        split: str,
        classes: Sequence[str],
        images: np.ndarray,
        labels: np.ndarray,
        masks: Optional[np.ndarray] = None,
        boxes: Optional[np.ndarray] = None,
        extras: Optional[dict[str, np.ndarray]] = None,
        info: Optional[dict] = None,
    ):
        self.name, self.split, self.classes = name, split, list(classes)
        self._images = np.asarray(images, dtype=np.uint8)
        self._labels = np.asarray(labels, dtype=np.int64)
        self._masks = None if masks is None else np.asarray(masks, dtype=bool)
        self._boxes = None if boxes is None else np.asarray(boxes, dtype=np.int64)
        self.extras = dict(extras or {})
        self.info = dict(info or {})
        n = len(self._labels)
        assert self._images.shape[0] == n and self._images.ndim == 4 and self._images.shape[3] == 3
        for a in (self._masks, self._boxes, *self.extras.values()):
            assert a is None or len(a) == n

    def __len__(self) -> int:
        return len(self._labels)

    def _item(self, i: int) -> Item:
        return Item(
            image=Image.fromarray(self._images[i], "RGB"),
            label=int(self._labels[i]),
            mask=None if self._masks is None else self._masks[i].copy(),
            box=None if self._boxes is None else tuple(int(v) for v in self._boxes[i]),
            extra={k: _extra_value(k, v[i]) for k, v in self.extras.items()},
        )

    @property
    def labels(self) -> np.ndarray:
        return self._labels.copy()

    def arrays(self, size: Optional[tuple[int, int]] = None, progress: Optional[Callable] = None) -> tuple[np.ndarray, np.ndarray]:
        x = self._images
        if size is not None and tuple(size) != x.shape[1:3]:
            h, w = size
            x = np.stack([np.asarray(Image.fromarray(im).resize((w, h), Image.BILINEAR)) for im in x]) if len(x) else np.zeros((0, h, w, 3), np.uint8)
        else:
            x = x.copy()
        return x, self._labels.copy()

    def masks(self) -> Optional[np.ndarray]:
        return None if self._masks is None else self._masks.copy()

    def boxes(self) -> Optional[np.ndarray]:
        return None if self._boxes is None else self._boxes.copy()

    def subset(self, n: int) -> "ArrayDataset":
        """The first ``n`` items (a view-backed copy of this dataset)."""
        return ArrayDataset(
            self.name, self.split, self.classes, self._images[:n], self._labels[:n],
            None if self._masks is None else self._masks[:n],
            None if self._boxes is None else self._boxes[:n],
            {k: v[:n] for k, v in self.extras.items()}, self.info,
        )


# -------------------------------------------------------------------------------------------------
# the cache of generated splits


def cache_dir() -> Path:
    from ..fitted import home

    return home() / "datasets"


def _cache_path(name: str, split: str, seed: int, version: int) -> Path:
    return cache_dir() / f"{name}_{split}_seed{seed}_v{version}.npz"


def _cache_load(path: Path) -> Optional[dict[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError):
        return None  # missing or unreadable: regenerate


def _cache_save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically (tmp file in the same folder + os.replace); failures are ignored."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is shareable
        os.replace(tmp, path)
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _pack(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = dict(arrays)
    for k in ("masks", "x_masks"):
        if k in out:
            out[k + "_shape"] = np.asarray(out[k].shape, dtype=np.int64)
            out[k] = np.packbits(out[k].reshape(-1))
    return out


def _unpack(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = dict(arrays)
    for k in ("masks", "x_masks"):
        if k in out:
            shape = tuple(int(v) for v in out.pop(k + "_shape"))
            out[k] = np.unpackbits(out[k], count=int(np.prod(shape))).reshape(shape).astype(bool)
    return out
