"""Image folders as datasets: one sub-folder per class, sorted sub-folder names are the classes.

Layouts:

- ``root/<class>/**/<image>``: one split, called ``all``, returned whatever split is asked for.
- ``root/{train,val,test}/<class>/**/<image>`` (``valid``/``validation`` count as ``val``, names
  are case-insensitive): each present split is its own dataset, ``split="all"`` joins them; the
  classes are the sorted union over the splits, so labels agree between splits.

Image files are recognised by extension (png, jpg, jpeg, webp, gif, bmp, tif, tiff; hidden files
ignored) and checked cheaply when the dataset is made (``PIL.Image.verify``): unreadable ones are
skipped and counted in ``ds.skipped`` (their paths in ``ds.skipped_files``). Images are loaded
lazily with :func:`explainers.data.images.load_image`.

``limit`` keeps a class-balanced selection: files are taken round-robin over the classes (each
class in sorted order) until ``limit`` readable ones are found, then kept in (class, path) order.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image

from ..errors import ExplainerError
from ..progress import report
from .base import Dataset, Item

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def _subdirs(p: Path) -> list[Path]:
    return sorted((c for c in p.iterdir() if c.is_dir() and not c.name.startswith(".")), key=lambda c: c.name)


def _images_in(p: Path) -> list[Path]:
    files = [
        f for f in p.rglob("*")
        if f.suffix.lower() in IMAGE_EXTENSIONS and not any(part.startswith(".") for part in f.relative_to(p).parts) and f.is_file()
    ]
    return sorted(files, key=lambda f: f.relative_to(p).as_posix())


def _readable(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except Exception:  # PIL raises many kinds for bad files
        return False


def _load(path: Path) -> Image.Image:
    from .images import load_image

    return load_image(str(path))


def split_folders(root: Path) -> dict[str, Path]:
    """``{"train": path, ...}`` for the split sub-folders of ``root`` (empty if it has none)."""
    out: dict[str, Path] = {}
    for d in _subdirs(root):
        s = SPLIT_ALIASES.get(d.name.lower())
        if s is not None and s not in out:
            out[s] = d
    return out


def load_folder(root: Path, split: str = "all", limit: Optional[int] = None) -> "FolderDataset":
    root = Path(root)
    if not root.is_dir():
        raise ExplainerError(f"dataset folder not found: {root}")
    splits = split_folders(root)
    if splits:
        if split == "all":
            roots = list(splits.values())
        else:
            key = SPLIT_ALIASES.get(split.lower())
            if key not in splits:
                raise ExplainerError(f"{root}: no {split!r} split (it has {', '.join(splits)}; or use 'all')")
            roots = [splits[key]]
        classes = sorted({d.name for r in splits.values() for d in _subdirs(r)})
        used_split = "all" if split == "all" else SPLIT_ALIASES[split.lower()]
    else:
        roots = [root]
        classes = [d.name for d in _subdirs(root)]
        used_split = "all"
    if not classes:
        raise ExplainerError(f"{root}: no class sub-folders (expected one sub-folder of images per class)")

    per_class: list[list[Path]] = []
    for c in classes:
        files: list[Path] = []
        for r in roots:
            if (r / c).is_dir():
                files += _images_in(r / c)
        per_class.append(files)
    if not any(per_class):
        raise ExplainerError(f"{root}: no image files ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}) in its class sub-folders")

    want = None if limit is None else max(0, int(limit))
    chosen: list[tuple[int, Path]] = []
    skipped: list[str] = []

    def take(label: int, f: Path) -> None:
        if _readable(f):
            chosen.append((label, f))
        else:
            skipped.append(str(f))

    if want is None:
        for label, files in enumerate(per_class):
            for f in files:
                take(label, f)
    else:
        cursors = [0] * len(classes)
        while len(chosen) < want and any(cursors[k] < len(per_class[k]) for k in range(len(classes))):
            for label in range(len(classes)):
                if len(chosen) >= want:
                    break
                if cursors[label] < len(per_class[label]):
                    take(label, per_class[label][cursors[label]])
                    cursors[label] += 1
        chosen.sort(key=lambda t: (t[0], str(t[1])))
    if not chosen and want != 0:
        raise ExplainerError(f"{root}: none of its {len(skipped)} image files could be read")
    return FolderDataset(root, used_split, classes, [f for _, f in chosen], [lab for lab, _ in chosen], skipped)


class FolderDataset(Dataset):
    """Images in a folder, loaded lazily. ``paths``, ``skipped`` (count), ``skipped_files``."""

    def __init__(self, root: Path, split: str, classes: list[str], paths: list[Path], labels: list[int], skipped_files: list[str]):
        self.root = Path(root)
        self.name = str(root)
        self.split = split
        self.classes = list(classes)
        self.paths = list(paths)
        self._labels = np.asarray(labels, dtype=np.int64)
        self.skipped_files = list(skipped_files)
        self.skipped = len(skipped_files)
        self.info = {"root": str(root), "skipped": self.skipped}

    def __len__(self) -> int:
        return len(self.paths)

    def _item(self, i: int) -> Item:
        return Item(image=_load(self.paths[i]), label=int(self._labels[i]), mask=None, box=None, extra={"path": str(self.paths[i])})

    @property
    def labels(self) -> np.ndarray:
        return self._labels.copy()

    def arrays(self, size: Optional[tuple[int, int]] = None, progress: Optional[Callable] = None) -> tuple[np.ndarray, np.ndarray]:
        """Every image resized to ``size=(H, W)`` (required: folder images differ in size)."""
        if size is None:
            raise ExplainerError("arrays() of an image folder needs size=(H, W)")
        h, w = (int(v) for v in size)
        x = np.zeros((len(self.paths), h, w, 3), np.uint8)
        step = max(1, len(self.paths) // 100)
        for i, p in enumerate(self.paths):
            x[i] = np.asarray(_load(p).resize((w, h), Image.BILINEAR))
            if (i + 1) % step == 0 or i + 1 == len(self.paths):
                report(progress, i + 1, len(self.paths), "loading images")
        return x, self._labels.copy()

