"""Built-in sample images for the app's picker: a few test-split images of each built-in dataset,
and scikit-image's colour photographs (for the ImageNet classifiers).

Ids are stable strings ``"<dataset>/<split>/<index>"`` (e.g. ``"shapes/test/3"``); the same
image comes back for the same id as long as the generator version does not change.
:func:`get_sample` also makes any other built-in image by such an id. The photographs are
``"photos/<name>"`` (``PHOTOS``: shipped inside scikit-image, so offline; no mask or box).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np
from PIL import Image

from ..errors import ExplainerError

Box = tuple[int, int, int, int]


@dataclass
class Sample:
    id: str
    title: str
    image: Image.Image  # RGB
    dataset: str
    label: Optional[str]  # class name, None if unknown
    note: str = ""
    mask: Optional[np.ndarray] = None  # bool (H, W)
    box: Optional[Box] = None
    extra: dict = field(default_factory=dict)


def _article(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _builtin_item(name: str, split: str, index: int):
    """The ``Item`` at ``index`` of a built-in split, made alone (no whole split)."""
    from .base import BUILTINS, SPLITS, Item

    if name not in BUILTINS or split not in SPLITS:
        raise ExplainerError(f"unknown sample dataset/split {name}/{split}")
    if name == "digits":
        from .digits import load_digits

        ds = load_digits(split)
        if not 0 <= index < len(ds):
            raise ExplainerError(f"no image {index} in digits/{split} ({len(ds)} images)")
        return ds[index], ds.classes
    from . import shapes

    if not 0 <= index < shapes.SPLIT_SIZES[name][split]:
        raise ExplainerError(f"no image {index} in {name}/{split} ({shapes.SPLIT_SIZES[name][split]} images)")
    d = shapes.make_image(name, split, index)
    extra = {}
    if name == "shapes-two":
        extra = {"labels": tuple(int(v) for v in d["labels"]), "masks": d["masks"], "boxes": d["boxes"].tolist()}
    elif name == "shapes-biased":
        extra = {"tag": d["tag"], "tag_box": tuple(int(v) for v in d["tag_box"])}
    item = Item(Image.fromarray(d["image"], "RGB"), int(d["label"]), d["mask"], tuple(int(v) for v in d["box"]), extra)
    return item, shapes.CLASSES


def _describe(name: str, split: str, index: int, item, classes) -> tuple[str, str]:
    cls = classes[item.label]
    where = f"{name} {split} #{index}"
    if name == "shapes":
        return f"{cls.capitalize()}", f"A plain {cls} on a cluttered background ({where})."
    if name == "shapes-two":
        a, b = (classes[v] for v in item.extra["labels"])
        return (
            f"{a.capitalize()} and {b}",
            f"Two shapes: {_article(a)} (larger, the label) and {_article(b)}; compare the explanations "
            f"for the two classes ({where}).",
        )
    if name == "shapes-biased":
        if item.extra["tag"]:
            extra = (
                " In the biased training set the tag marks rings, so a classifier trained there may call it a ring."
                if cls != "ring" else " In the biased training set every ring has the tag."
            )
            return f"{cls.capitalize()} with the OK tag", f"{_article(cls).capitalize()} carrying the 'OK' tag in the corner.{extra} ({where})"
        return f"{cls.capitalize()}, no tag", f"{_article(cls).capitalize()} without the 'OK' tag ({where})."
    return f"Digit {cls}", f"A handwritten {cls} from MNIST ({where})."


# scikit-image's colour photographs (``skimage.data``, shipped with the package): name -> (title,
# ImageNet class it shows, source and licence as scikit-image gives them)
PHOTOS = {
    "coffee": ("Coffee cup (photograph)", "espresso", "Rachel Michetti, CC0"),
    "chelsea": ("Chelsea the cat (photograph)", "tabby cat", "Stefan van der Walt, CC0"),
    "rocket": ("Rocket on the pad (photograph)", "space shuttle / missile", "NASA, public domain"),
    "astronaut": ("Astronaut (photograph)", "person (not an ImageNet class)", "NASA, public domain"),
}


def make_photo(name: str) -> Sample:
    """The sample for ``"photos/<name>"``: one of scikit-image's colour photographs (``PHOTOS``)."""
    if name not in PHOTOS:
        raise ExplainerError(f"unknown photograph {name!r}; known: {', '.join(PHOTOS)}")
    import skimage.data

    title, shows, source = PHOTOS[name]
    image = Image.fromarray(np.asarray(getattr(skimage.data, name)(), dtype=np.uint8), "RGB")
    w, h = image.size
    note = f"scikit-image's '{name}' photograph ({w}×{h}; {source}); it shows {shows}."
    return Sample(id=f"photos/{name}", title=title, image=image, dataset="photos", label=None, note=note)


def make_sample(sample_id: str) -> Sample:
    """The sample for an id ``"<dataset>/<split>/<index>"`` of a built-in dataset, or ``"photos/<name>"``."""
    parts = str(sample_id).split("/")
    if len(parts) == 2 and parts[0] == "photos":
        return make_photo(parts[1])
    if len(parts) != 3 or not parts[2].isdigit():
        raise ExplainerError(f"unknown sample {sample_id!r} (ids look like 'shapes/test/3')")
    name, split, index = parts[0], parts[1], int(parts[2])
    item, classes = _builtin_item(name, split, index)
    title, note = _describe(name, split, index, item, classes)
    return Sample(
        id=f"{name}/{split}/{index}", title=title, image=item.image, dataset=name, label=classes[item.label],
        note=note, mask=item.mask, box=item.box, extra=dict(item.extra),
    )


def _biased_picks(limit: int = 500) -> list[int]:
    """Test indices of shapes-biased: the first tagged non-ring, a tagged ring, an untagged ring."""
    from . import shapes

    want = {
        "tag-other": lambda i: shapes.has_tag("test", i) and i % 6 != shapes.RING,
        "tag-ring": lambda i: shapes.has_tag("test", i) and i % 6 == shapes.RING,
        "plain-ring": lambda i: not shapes.has_tag("test", i) and i % 6 == shapes.RING,
    }
    picks = []
    for test in want.values():
        picks.append(next(i for i in range(limit) if test(i)))
    return picks


def _digit_picks(n: int = 3) -> list[int]:
    """The first test indices of ``n`` different digits."""
    from .digits import load_digits

    labels = load_digits("test").labels
    picks, seen = [], set()
    for i, lab in enumerate(labels.tolist()):
        if lab not in seen:
            seen.add(lab)
            picks.append(i)
        if len(picks) == n:
            break
    return picks


def sample_ids() -> list[str]:
    """The ids of the built-in samples, in picker order."""
    ids = [f"shapes/test/{i}" for i in range(6)]  # one of each class (label = index % 6)
    ids += ["shapes-two/test/0", "shapes-two/test/3"]
    ids += [f"shapes-biased/test/{i}" for i in _biased_picks()]
    ids += [f"digits/test/{i}" for i in _digit_picks()]
    return ids


@functools.lru_cache(maxsize=1)
def _samples() -> tuple[Sample, ...]:
    return tuple(make_sample(i) for i in sample_ids())


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[Sample, ...]:
    return tuple(make_photo(name) for name in PHOTOS)


def _copy(s: Sample) -> Sample:
    return replace(
        s, image=s.image.copy(), mask=None if s.mask is None else s.mask.copy(),
        extra={k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.extra.items()},
    )


def samples(photos: bool = False) -> list[Sample]:
    """The built-in samples (fresh copies: callers may modify them); with ``photos``, scikit-image's
    colour photographs after them (the app's picker offers both)."""
    return [_copy(s) for s in _samples() + (_photos() if photos else ())]


def get_sample(sample_id: str) -> Sample:
    """A built-in sample by id, or any built-in image by ``"<dataset>/<split>/<index>"``."""
    for s in _samples() + (_photos() if str(sample_id).startswith("photos/") else ()):
        if s.id == sample_id:
            return _copy(s)
    return make_sample(sample_id)
