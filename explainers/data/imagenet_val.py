"""ImageNet's validation layout: a flat folder of ``ILSVRC2012_val_*.JPEG`` with their boxes.

The labels and boxes come from, in this order of preference:

- ``FOLDER/Annotations/*.xml``: Pascal VOC files (``ILSVRC2012_bbox_val_v3.tgz``), one per image;
- ``LOC_val_solution.csv`` of the localisation challenge (Kaggle), in the folder or up to three
  folders above it (Kaggle puts it three above ``ILSVRC/Data/CLS-LOC/val``); each row is
  ``ImageId,PredictionString`` with the string made of ``wnid xmin ymin xmax ymax`` groups.

Class ids are WordNet ids (``n01440764``); torchvision's index of a class is the position of its
id in the *sorted* list of the 1000 ids. That list does not ship with torchvision or any package
here, so it is read from ``LOC_synset_mapping.txt`` (Kaggle), ``synset_words.txt`` (Caffe) or
``imagenet_wnids.txt`` (first word of each line), in the folder or up to three above; when there
is none and the annotations themselves name all 1000 ids (the full validation set), their sorted
set is the list. ``ds.classes`` are torchvision's class names (its ImageNet weights' meta), so a
torchvision-style classifier takes the labels as they are; ``Item.extra["wnid"]`` keeps the id.

An item's ``mask`` is the union of all boxes of its class, ``box`` the largest of them (the first
among equals), both at the image's own size; ``extra["boxes"]`` lists them all. The evaluation
moves the mask with the image through the classifier's resize and centre crop
(:func:`explainers.evaluation.object_mask`), so the box metrics see the boxes where the model
sees the object. Reading of the coordinates: pixel indices with ``xmax``/``ymax`` inclusive, so a
box is ``(xmin, ymin, xmax + 1, ymax + 1)``; a box may pass the image's edge by one pixel (a
1-based file) and is clipped, more than that is an error.

Mismatches are one-line :class:`ExplainerError`: an image without a label, a label for an image
that is not in the folder (unless the annotations are the official full set of 50,000, which a
folder holding a subset of the images may keep as it is), an id outside the 1000, a malformed
csv/xml line, a box outside its image or an xml whose ``<size>`` is not the image's (the last two
when the item is loaded). ``limit`` keeps the first images in name order (the validation set's
order is already shuffled over the classes).
"""
from __future__ import annotations

import csv
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import ExplainerError
from .base import Item
from .folder import FolderDataset, _load, _readable

VAL_IMAGE = re.compile(r"^(ILSVRC2012_val_\d{8})\.jpe?g$", re.IGNORECASE)
WNID = re.compile(r"^n\d{8}$")
CSV_NAME = "LOC_val_solution.csv"
MAPPING_NAMES = ("LOC_synset_mapping.txt", "synset_words.txt", "imagenet_wnids.txt")
ANCESTORS = 3
FULL_VAL = 50_000  # images in the official validation set
NUM_CLASSES = 1000

Box = tuple[int, int, int, int]
Annotation = tuple[str, Box]  # (wnid, (xmin, ymin, xmax, ymax) as written in the file)


def is_imagenet_val(root: Path) -> bool:
    """Whether ``root`` holds ``ILSVRC2012_val_*.JPEG`` files directly (stops at the first)."""
    try:
        with os.scandir(root) as it:
            return any(VAL_IMAGE.match(e.name) and e.is_file() for e in it)
    except OSError:
        return False


def _find(root: Path, names: tuple[str, ...]) -> Optional[Path]:
    for d in [root, *list(root.resolve().parents)[:ANCESTORS]]:
        for n in names:
            if (d / n).is_file():
                return d / n
    return None


def read_wnids(path: Path) -> list[str]:
    """The 1000 WordNet ids of a mapping file (first word per line), sorted: torchvision's order."""
    ids: list[str] = []
    for k, line in enumerate(Path(path).read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        w = line.split()[0]
        if not WNID.match(w):
            raise ExplainerError(f"{path} line {k}: {w!r} is not a WordNet id like n01440764")
        ids.append(w)
    if len(set(ids)) != NUM_CLASSES:
        raise ExplainerError(f"{path}: holds {len(set(ids))} distinct class ids, ImageNet has {NUM_CLASSES}")
    return sorted(set(ids))


def _box(path, where: str, vals: list[str]) -> Box:
    try:
        x0, y0, x1, y1 = (int(round(float(v))) for v in vals)
    except ValueError:
        raise ExplainerError(f"{path} {where}: box {' '.join(vals)!r} is not four numbers") from None
    if x1 < x0 or y1 < y0 or min(x0, y0) < 0:
        raise ExplainerError(f"{path} {where}: box ({x0}, {y0}, {x1}, {y1}) is not xmin ymin xmax ymax")
    return (x0, y0, x1, y1)


def read_loc_csv(path: Path) -> dict[str, list[Annotation]]:
    """``LOC_val_solution.csv``: image id -> [(wnid, box), ...]."""
    out: dict[str, list[Annotation]] = {}
    with open(path, newline="", errors="replace") as f:
        rows = csv.reader(f)
        head = next(rows, None)
        if not head or [h.strip() for h in head[:2]] != ["ImageId", "PredictionString"]:
            raise ExplainerError(f"{path} line 1: expected the header ImageId,PredictionString")
        for k, row in enumerate(rows, 2):
            if not row:
                continue
            if len(row) != 2:
                raise ExplainerError(f"{path} line {k}: expected 2 fields, found {len(row)}")
            toks = row[1].split()
            if not toks or len(toks) % 5:
                raise ExplainerError(f"{path} line {k}: the prediction string is not groups of 'wnid xmin ymin xmax ymax'")
            out[row[0].strip()] = [(toks[i], _box(path, f"line {k}", toks[i + 1:i + 5])) for i in range(0, len(toks), 5)]
    return out


def read_voc_xml(path: Path) -> tuple[Optional[tuple[int, int]], list[Annotation]]:
    """A Pascal VOC file: ((width, height) or None, [(wnid, box), ...])."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise ExplainerError(f"{path}: not a readable xml file ({e})") from None
    size = None
    w, h = root.findtext("size/width"), root.findtext("size/height")
    if w is not None and h is not None:
        try:
            size = (int(w), int(h))
        except ValueError:
            raise ExplainerError(f"{path}: <size> is not two whole numbers") from None
    anns: list[Annotation] = []
    for j, obj in enumerate(root.iter("object"), 1):
        name = (obj.findtext("name") or "").strip()
        vals = [obj.findtext(f"bndbox/{t}") for t in ("xmin", "ymin", "xmax", "ymax")]
        if not name or any(v is None for v in vals):
            raise ExplainerError(f"{path}: object {j} lacks <name> or a full <bndbox>")
        anns.append((name, _box(path, f"object {j}", [v.strip() for v in vals])))
    if not anns:
        raise ExplainerError(f"{path}: no <object> with a box")
    return size, anns


def _mismatch(root: Path, images: dict[str, Path], labelled: set[str], source: Path) -> None:
    unlabelled = sorted(set(images) - labelled)
    if unlabelled:
        raise ExplainerError(f"{images[unlabelled[0]].name} has no label in {source} ({len(unlabelled)} of {len(images)} images unlabelled)")
    missing = sorted(labelled - set(images))
    if missing and len(labelled) != FULL_VAL:
        raise ExplainerError(f"{source} labels {missing[0]}, which is not in {root} ({len(missing)} labels without an image)")


def load_imagenet_val(root: Path, limit: Optional[int] = None) -> "ImageNetValDataset":
    root = Path(root)
    images = {VAL_IMAGE.match(p.name).group(1): p for p in root.iterdir() if VAL_IMAGE.match(p.name) and p.is_file()}
    sizes: dict[str, tuple[int, int]] = {}
    xml_dir = root / "Annotations"
    if xml_dir.is_dir() and any(xml_dir.glob("*.xml")):
        source = xml_dir
        anns: dict[str, list[Annotation]] = {}
        for f in sorted(xml_dir.glob("*.xml")):
            size, a = read_voc_xml(f)
            anns[f.stem] = a
            if size is not None:
                sizes[f.stem] = size
    else:
        csv_path = _find(root, (CSV_NAME,))
        if csv_path is None:
            raise ExplainerError(f"{root}: ImageNet validation images without labels; add Annotations/*.xml or {CSV_NAME}")
        source, anns = csv_path, read_loc_csv(csv_path)
    _mismatch(root, images, set(anns), source)

    mapping = _find(root, MAPPING_NAMES)
    if mapping is not None:
        wnids = read_wnids(mapping)
    else:
        seen = {w for a in anns.values() for w, _ in a}
        if len(seen) != NUM_CLASSES:
            raise ExplainerError(f"{root}: the annotations name {len(seen)} classes; to map them to torchvision's order add "
                                 f"{MAPPING_NAMES[0]} (from the localisation challenge) beside the images or above them")
        wnids = sorted(seen)
    index = {w: i for i, w in enumerate(wnids)}

    ids = sorted(images)
    if limit is not None:
        ids = ids[: max(0, int(limit))]
    paths, labels, boxes, skipped = [], [], [], []
    for i in ids:
        wnid = anns[i][0][0]  # one class per validation image: the first object's is the label
        if wnid not in index:
            raise ExplainerError(f"{images[i].name}: class id {wnid!r} is not one of the {NUM_CLASSES} ImageNet classes")
        if not _readable(images[i]):
            skipped.append(str(images[i]))
            continue
        paths.append(images[i])
        labels.append(index[wnid])
        boxes.append([b for w, b in anns[i] if w == wnid])
    info = {"layout": "imagenet-val", "annotations": str(source), "class_ids": str(mapping) if mapping else "annotations"}
    return ImageNetValDataset(root, _class_names(), wnids, paths, labels, boxes, [sizes.get(Path(p).stem) for p in paths], skipped, info)


def _class_names() -> list[str]:
    """torchvision's 1000 ImageNet class names in index order (its weights' meta; no download)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def clip_box(box: Box, width: int, height: int, name: str = "image") -> tuple[int, int, int, int]:
    """A file's inclusive ``(xmin, ymin, xmax, ymax)`` as ``(x0, y0, x1, y1)`` with x1/y1 exclusive,
    clipped to the image; more than one pixel outside it is an error."""
    x0, y0, x1, y1 = box[0], box[1], box[2] + 1, box[3] + 1
    if x0 >= width or y0 >= height or x1 > width + 1 or y1 > height + 1:
        raise ExplainerError(f"{name}: box {tuple(box)} lies outside the {width}x{height} image")
    return (x0, y0, min(x1, width), min(y1, height))


class ImageNetValDataset(FolderDataset):
    """ImageNet validation images with their boxes; ``wnids`` (torchvision's order), ``paths``."""

    def __init__(self, root, classes, wnids, paths, labels, boxes, sizes, skipped_files, info):
        super().__init__(root, "val", classes, paths, labels, skipped_files)
        self.wnids = list(wnids)
        self._boxes = boxes
        self._sizes = sizes
        self.info.update(info)

    def _item(self, i: int) -> Item:
        path = self.paths[i]
        image = _load(path)
        w, h = image.size
        if self._sizes[i] is not None and tuple(self._sizes[i]) != (w, h):
            sw, sh = self._sizes[i]
            raise ExplainerError(f"{path.name}: its xml gives the size {sw}x{sh}, the image is {w}x{h}")
        boxes = [clip_box(b, w, h, path.name) for b in self._boxes[i]]
        mask = np.zeros((h, w), bool)
        for x0, y0, x1, y1 in boxes:
            mask[y0:y1, x0:x1] = True
        box = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))  # max keeps the first among equals
        label = int(self._labels[i])
        return Item(image=image, label=label, mask=mask, box=box,
                    extra={"path": str(path), "wnid": self.wnids[label], "boxes": [list(b) for b in boxes]})
