"""The synthetic shapes datasets: ``shapes``, ``shapes-two`` and ``shapes-biased``.

Every image is 64x64 RGB: one (or two) solid-coloured shapes on a smooth random colour texture
with thin clutter (line segments, dots, tiny blobs) that does not look like any class. Classes, in
this order: circle, square, triangle, star, cross, ring.

Image ``i`` of a split is made from ``np.random.default_rng([seed, code, i])`` alone, where ``code``
is ``10 * dataset code + split code`` (shapes 0, shapes-two 1, shapes-biased 2; train 0, val 1,
test 2), so any single image can be made without making the rest (:func:`make_image`). The label
of image ``i`` is ``i % 6`` (the larger shape's class for ``shapes-two``), so every split is
exactly balanced and any prefix of it nearly so.

Drawing is anti-aliased: the clutter and shapes are drawn at 4x on a nearest-upsampled copy of the
background and box-downsampled; a shape's mask is its supersampled coverage thresholded at 0.5
(a ring's mask excludes its hole) and its box the mask's bounding box, ``(x0, y0, x1, y1)`` with
``x1``/``y1`` exclusive.

- ``shapes-two``: two shapes of different classes a few pixels apart (their masks never touch,
  and a smaller shape never sits in a ring's hole); the label is the class of the shape with the
  larger mask (at least 1.25x the other's area). ``extra``: ``labels`` (larger, smaller),
  ``masks`` (H, W, 2) and ``boxes`` (2, 4) in the same order.
- ``shapes-biased``: a tiny "OK" tag (PIL's bitmap font, black on a white rectangle) in the
  bottom-right corner, on every ring and no other shape in train/val (:data:`BIAS_P_TRAIN`),
  and on 50% of all images in test. The shape never overlaps the tag's place, tagged or not. ``extra``:
  ``tag`` (bool) and ``tag_box``. Which images are tagged follows a golden-ratio sequence per
  class (see :func:`has_tag`), so any prefix of a split has very nearly those rates.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Optional

import numpy as np
from PIL import Image, ImageDraw

from ..progress import report

GENERATOR_VERSION = 3
SIZE = 64
SS = 4  # supersampling factor
CLASSES = ["circle", "square", "triangle", "star", "cross", "ring"]
KINDS = ("shapes", "shapes-two", "shapes-biased")
SPLIT_SIZES = {
    "shapes": {"train": 6000, "val": 1000, "test": 1000},
    "shapes-two": {"train": 2000, "val": 500, "test": 500},
    "shapes-biased": {"train": 6000, "val": 1000, "test": 1000},
}
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
KIND_CODES = {"shapes": 0, "shapes-two": 1, "shapes-biased": 2}
DEFAULT_SEED = 0

# size of one shape: circumradius in px (the shape is about twice this across)
RADIUS_RANGE = (8.5, 17.0)
# shapes-two: the larger and the smaller shape, and the gap between them (px)
TWO_RADIUS_LARGE = (11.0, 15.5)
TWO_RADIUS_SMALL = (8.0, 12.0)
TWO_MIN_AREA_RATIO = 1.25
TWO_GAP = 3
# shapes-biased
BIAS_TAG_TEXT = "OK"
# The chance of the tag in train/val. A perfectly predictive tag is what makes the shortcut show:
# a small CNN (3000 images, 8 epochs) called 68% of the tagged non-rings of the test split "ring"
# with {1.0, 0.0}, 22% with {0.98, 0.0}, 14% with {0.95, 0.0} and none with {0.95, 0.03}: any
# counterexamples teach it the shapes and the tag no longer decides.
BIAS_P_TRAIN = {"ring": 1.0, "other": 0.0}
BIAS_P_TEST = 0.5
TAG_MARGIN = 2  # px from the image border
TAG_GAP = 2  # px kept free between the shape and the tag's place
RING = CLASSES.index("ring")


def rng_for(kind: str, split: str, index: int, seed: int = DEFAULT_SEED) -> np.random.Generator:
    return np.random.default_rng([seed, 10 * KIND_CODES[kind] + SPLIT_CODES[split], index])


# ---------------------------------------------------------------------------------------------
# geometry


def _ngon(r: float, n: int, phase: float = 0.0) -> np.ndarray:
    a = phase + np.arange(n) * (2 * np.pi / n)
    return np.stack([r * np.sin(a), -r * np.cos(a)], axis=1)


def _parts(cls: int, r: float) -> list[tuple[np.ndarray, int]]:
    """The shape of class ``cls`` with circumradius about ``r``, centred at 0, unrotated.

    A list of (vertices (n, 2), fill) polygons drawn in order: fill 255 paints, 0 cuts a hole.
    """
    name = CLASSES[cls]
    if name == "circle":
        return [(_ngon(0.92 * r, 64), 255)]
    if name == "square":
        return [(_ngon(1.02 * r, 4, np.pi / 4), 255)]
    if name == "triangle":
        return [(_ngon(1.12 * r, 3), 255)]
    if name == "star":
        outer, inner = _ngon(1.08 * r, 5), _ngon(0.46 * r, 5, np.pi / 5)
        return [(np.stack([outer, inner], axis=1).reshape(10, 2), 255)]
    if name == "cross":
        w, a = 0.29 * r, 1.0 * r
        pts = [(w, a), (w, w), (a, w), (a, -w), (w, -w), (w, -a), (-w, -a), (-w, -w), (-a, -w), (-a, w), (-w, w), (-w, a)]
        return [(np.asarray(pts, dtype=float), 255)]
    if name == "ring":
        return [(_ngon(0.96 * r, 64), 255), (_ngon(0.50 * r, 48), 0)]
    raise ValueError(cls)


def _rotate(parts, theta: float):
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    return [(p @ rot.T, f) for p, f in parts]


def _extent(parts) -> tuple[float, float]:
    v = np.concatenate([p for p, _ in parts])
    return float(np.abs(v[:, 0]).max()), float(np.abs(v[:, 1]).max())


def _draw_parts(draw: ImageDraw.ImageDraw, parts, cx: float, cy: float, holes: bool = True, fill=None) -> None:
    """Draw the polygons; ``fill`` (a colour) replaces 255 (holes are drawn as 0 either way)."""
    for p, f in parts:
        if f == 0 and not holes:
            continue
        draw.polygon([((cx + x) * SS, (cy + y) * SS) for x, y in p], fill=fill if (f and fill is not None) else f)


def _mask256(parts, cx: float, cy: float, holes: bool = True) -> Image.Image:
    m = Image.new("L", (SIZE * SS, SIZE * SS), 0)
    _draw_parts(ImageDraw.Draw(m), parts, cx, cy, holes=holes)
    return m


def _coverage_mask(m256: Image.Image) -> np.ndarray:
    """Supersampled coverage thresholded at 0.5 -> bool (SIZE, SIZE)."""
    return np.asarray(m256.reduce(SS)) >= 128


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a non-empty bool mask, x1/y1 exclusive; (0, 0, 0, 0) if empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(xs) == 0:
        return (0, 0, 0, 0)
    return (int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1)


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Square (Chebyshev) dilation by ``r`` px."""
    out = mask.copy()
    for axis in (0, 1):
        acc = out.copy()
        for d in range(1, r + 1):
            acc[tuple(slice(d, None) if a == axis else slice(None) for a in range(2))] |= out[
                tuple(slice(None, -d) if a == axis else slice(None) for a in range(2))
            ]
            acc[tuple(slice(None, -d) if a == axis else slice(None) for a in range(2))] |= out[
                tuple(slice(d, None) if a == axis else slice(None) for a in range(2))
            ]
        out = acc
    return out


# ---------------------------------------------------------------------------------------------
# background, clutter, colour


def _background(rng: np.random.Generator) -> np.ndarray:
    """A smooth random colour texture, float (SIZE, SIZE, 3) in 0..255."""
    base = rng.uniform(45, 210, size=3)
    k = int(rng.integers(2, 5))
    low = rng.normal(0, 38, size=(k, k, 3))
    low = np.asarray(Image.fromarray(np.clip(low + 128, 0, 255).astype(np.uint8)).resize((SIZE, SIZE), Image.BICUBIC), dtype=np.float32) - 128
    g = int(rng.integers(10, 17))
    grain = rng.normal(0, 9, size=(g, g, 1)).repeat(3, axis=2) * rng.uniform(0.7, 1.3, size=3)
    grain = np.asarray(Image.fromarray(np.clip(grain + 128, 0, 255).astype(np.uint8)).resize((SIZE, SIZE), Image.BICUBIC), dtype=np.float32) - 128
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE - 0.5
    grad = (np.cos(ang) * xx + np.sin(ang) * yy)[..., None] * rng.uniform(-40, 40, size=3)
    return np.clip(base + low + grain + grad, 0, 255)


def _clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, bg_mean: np.ndarray) -> None:
    """Thin line segments, small dots and tiny irregular blobs, drawn at 4x."""
    n_lines, n_dots, n_blobs = int(rng.integers(3, 9)), int(rng.integers(4, 13)), int(rng.integers(1, 4))
    n = n_lines + n_dots + n_blobs
    # colours, some pulled towards the background (fainter)
    t = rng.uniform(0.0, 0.45, size=(n, 1))
    colours = [tuple(int(v) for v in c) for c in (1 - t) * rng.integers(0, 256, size=(n, 3)) + t * bg_mean]
    xy = rng.uniform(0, SIZE, size=(n, 2))
    for j in range(n_lines):  # line segments (sometimes a 2-segment polyline), 0.75-1.25 px wide
        x, y = xy[j] * (SIZE + 8) / SIZE - 4
        pts = [(x * SS, y * SS)]
        for _ in range(1 + int(rng.random() < 0.3)):
            length, a = rng.uniform(6, 20), rng.uniform(0, 2 * np.pi)
            x, y = x + length * math.cos(a), y + length * math.sin(a)
            pts.append((x * SS, y * SS))
        draw.line(pts, fill=colours[j], width=int(rng.integers(3, 6)))
    radii = rng.uniform(0.7, 1.8, size=n_dots)
    for j in range(n_dots):  # dots
        (x, y), r = xy[n_lines + j], radii[j]
        draw.ellipse([(x - r) * SS, (y - r) * SS, (x + r) * SS, (y + r) * SS], fill=colours[n_lines + j])
    for j in range(n_blobs):  # tiny irregular blobs
        x, y = xy[n_lines + n_dots + j]
        m = int(rng.integers(5, 8))
        a = np.sort(rng.uniform(0, 2 * np.pi, size=m))
        rr = rng.uniform(1.0, 2.8, size=m)
        pts = [((x + q * math.cos(u)) * SS, (y + q * math.sin(u)) * SS) for q, u in zip(rr, a)]
        draw.polygon(pts, fill=colours[n_lines + n_dots + j])


def _luma(c: np.ndarray) -> np.ndarray:
    return c @ np.array([0.299, 0.587, 0.114])


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray, tries: int = 32) -> tuple[int, int, int]:
    """A random colour far from the background pixels ``under`` (n, 3), in colour and in luma:
    the first of ``tries`` random candidates whose distance to all but 5% of those pixels is at
    least 110 and whose luma differs from theirs by at least 60 (else the best, pushed in luma)."""
    cand = rng.integers(0, 256, size=(tries, 3)).astype(np.float32)
    under = under.astype(np.float32)
    if len(under) > 256:
        under = under[:: len(under) // 256 + 1]
    d = np.sqrt(((cand[:, None, :] - under[None, :, :]) ** 2).sum(-1))  # (tries, n)
    k = max(0, int(0.05 * d.shape[1]) - 1)
    d5 = np.partition(d, k, axis=1)[:, k]
    mean_l = float(_luma(under.mean(axis=0)))
    dl = np.abs(_luma(cand) - mean_l)
    score = np.minimum(d5 / 110.0, dl / 60.0)
    ok = np.flatnonzero(score >= 1.0)
    if len(ok):
        return tuple(int(v) for v in cand[ok[0]])
    best = cand[int(np.argmax(score))]
    shift = 90.0 if mean_l < 128 else -90.0
    return tuple(int(v) for v in np.clip(best + shift, 0, 255))


@functools.lru_cache(maxsize=1)
def _tag_patch() -> np.ndarray:
    """The "OK" tag: black bitmap-font text on a white rectangle, uint8 (h, w, 3)."""
    from PIL import ImageFont

    font = ImageFont.load_default_imagefont() if hasattr(ImageFont, "load_default_imagefont") else ImageFont.load_default()
    im = Image.new("L", (40, 24), 0)
    ImageDraw.Draw(im).text((4, 4), BIAS_TAG_TEXT, font=font, fill=255)
    ink = np.asarray(im) > 0
    x0, y0, x1, y1 = bbox(ink)
    ink = ink[y0 - 1 : y1 + 1, x0 - 1 : x1 + 1]  # 1 px white border
    patch = np.where(ink[..., None], 0, 255).astype(np.uint8)
    return np.repeat(patch, 3, axis=2)


def tag_box() -> tuple[int, int, int, int]:
    h, w = _tag_patch().shape[:2]
    x1 = y1 = SIZE - TAG_MARGIN
    return (x1 - w, y1 - h, x1, y1)


# ---------------------------------------------------------------------------------------------
# one image


def _place(rng, cls: int, r: float, keep_out: Optional[np.ndarray], tries: int = 60):
    """Random rotation and position fully inside the image, not touching ``keep_out`` (bool)."""
    for attempt in range(tries):
        rr = r * (0.97 ** (attempt // 10))  # shrink a little if it keeps failing
        parts = _rotate(_parts(cls, rr), rng.uniform(0, 2 * np.pi))
        ex, ey = _extent(parts)
        cx = rng.uniform(ex + 1, SIZE - 1 - ex)
        cy = rng.uniform(ey + 1, SIZE - 1 - ey)
        filled = _coverage_mask(_mask256(parts, cx, cy, holes=False))
        if keep_out is None or not (filled & keep_out).any():
            return parts, cx, cy, filled
    return None


def tag_probability(split: str, label: int) -> float:
    """shapes-biased: the chance that an image of class ``label`` in ``split`` carries the tag."""
    if split == "test":
        return BIAS_P_TEST
    return BIAS_P_TRAIN["ring" if label == RING else "other"]


def has_tag(split: str, index: int, seed: int = DEFAULT_SEED) -> bool:
    """Whether shapes-biased image ``index`` of ``split`` carries the tag (without drawing it).

    A low-discrepancy (golden-ratio) sequence over the images of each class, so that every
    prefix of a split has very nearly the intended rate per class (see :data:`BIAS_P_TRAIN`).
    """
    label, k = index % len(CLASSES), index // len(CLASSES)
    code = 10 * KIND_CODES["shapes-biased"] + SPLIT_CODES[split]
    offset = (0.7548776662 * seed + 0.5698402910 * code + 0.2360679775 * label) % 1.0
    return bool((k * 0.6180339887498949 + offset) % 1.0 < tag_probability(split, label))


def make_image(kind: str, split: str, index: int, seed: int = DEFAULT_SEED) -> dict:
    """Make image ``index`` of a split. Returns a dict: ``image`` uint8 (64, 64, 3), ``label``,
    ``mask`` bool (64, 64), ``box`` (4,), and per dataset ``labels``/``masks``/``boxes``
    (shapes-two) or ``tag``/``tag_box`` (shapes-biased)."""
    if kind not in KINDS:
        raise ValueError(f"unknown shapes dataset {kind!r}")
    rng = rng_for(kind, split, index, seed)
    label = index % len(CLASSES)
    out: dict = {"label": label}

    keep_out = None
    if kind == "shapes-biased":
        out["tag"] = has_tag(split, index, seed)
        tb = tag_box()
        out["tag_box"] = np.asarray(tb, dtype=np.int64)
        keep_out = np.zeros((SIZE, SIZE), bool)
        keep_out[max(tb[1] - TAG_GAP, 0) : tb[3] + TAG_GAP, max(tb[0] - TAG_GAP, 0) : tb[2] + TAG_GAP] = True

    bg = _background(rng)
    bg_mean = bg.reshape(-1, 3).mean(axis=0)
    canvas = Image.fromarray(bg.round().astype(np.uint8)).resize((SIZE * SS, SIZE * SS), Image.NEAREST)
    draw = ImageDraw.Draw(canvas)
    _clutter(draw, rng, bg_mean)

    # the shapes: (class, radius)
    if kind == "shapes-two":
        other = int((label + rng.integers(1, len(CLASSES))) % len(CLASSES))
        specs = [(label, rng.uniform(*TWO_RADIUS_LARGE)), (other, rng.uniform(*TWO_RADIUS_SMALL))]
    else:
        specs = [(label, rng.uniform(*RADIUS_RANGE))]

    for attempt in range(100):
        placed = []
        taken = keep_out
        for j, (cls, r) in enumerate(specs):
            got = _place(rng, cls, r, taken)
            if got is None:
                break
            parts, cx, cy, filled = got
            mask = _coverage_mask(_mask256(parts, cx, cy)) if CLASSES[cls] == "ring" else filled
            placed.append((cls, parts, cx, cy, mask))
            if j + 1 < len(specs):
                grown = _dilate(filled, TWO_GAP + 1)
                taken = grown if taken is None else (taken | grown)
        if len(placed) == len(specs):
            if kind != "shapes-two":
                break
            a0, a1 = placed[0][4].sum(), placed[1][4].sum()
            if a0 >= TWO_MIN_AREA_RATIO * a1 or attempt >= 50:  # (the cap is never reached in practice)
                break
        # could not place them all, or the "larger" one is not clearly larger: shrink the second
        specs = [specs[0]] + [(c, max(r * 0.9, 5.0)) for c, r in specs[1:]]
        if len(specs) == 1:
            specs = [(specs[0][0], max(specs[0][1] * 0.95, 5.0))]
    else:  # pragma: no cover - a fixed keep-out region and shrinking radii always leave room
        raise RuntimeError(f"could not place the shapes of {kind}/{split}/{index}")

    for cls, parts, cx, cy, mask in placed:
        colour = _contrasting_colour(rng, bg[mask])
        if len(parts) == 1:
            _draw_parts(draw, parts, cx, cy, fill=colour)
        else:  # a ring: paste through its mask so the hole stays background
            x0, y0, x1, y1 = (v * SS for v in bbox(mask))
            region = (max(x0 - SS, 0), max(y0 - SS, 0), min(x1 + SS, SIZE * SS), min(y1 + SS, SIZE * SS))
            canvas.paste(colour, region, _mask256(parts, cx, cy).crop(region))

    img = np.asarray(canvas.reduce(SS), dtype=np.float32)
    img = img + rng.normal(0, 3.0, size=img.shape)
    img = np.clip(img.round(), 0, 255).astype(np.uint8)
    if out.get("tag"):
        x0, y0, x1, y1 = tag_box()
        img[y0:y1, x0:x1] = _tag_patch()

    masks = [m for *_, m in placed]
    union = np.logical_or.reduce(masks)
    out["image"] = img
    out["mask"] = union
    out["box"] = np.asarray(bbox(masks[0]) if kind == "shapes-two" else bbox(union), dtype=np.int64)
    if kind == "shapes-two":
        out["labels"] = np.asarray([placed[0][0], placed[1][0]], dtype=np.int64)
        out["masks"] = np.stack(masks, axis=-1)
        out["boxes"] = np.asarray([bbox(m) for m in masks], dtype=np.int64)
    return out


# ---------------------------------------------------------------------------------------------
# a split

EXTRA_KEYS = {"shapes": (), "shapes-two": ("labels", "masks", "boxes"), "shapes-biased": ("tag", "tag_box")}


def generate(
    kind: str,
    split: str,
    seed: int = DEFAULT_SEED,
    limit: Optional[int] = None,
    progress: Optional[Callable] = None,
) -> dict[str, np.ndarray]:
    """Make the first ``limit`` images (all if None) of a split, as arrays: ``images`` uint8
    (N, 64, 64, 3), ``labels`` int64 (N,), ``masks`` bool (N, 64, 64), ``boxes`` int64 (N, 4), and
    the dataset's extras (see :data:`EXTRA_KEYS`) stacked along a first axis of length N."""
    n = SPLIT_SIZES[kind][split]
    if limit is not None:
        n = max(0, min(n, int(limit)))
    keys = ("image", "label", "mask", "box") + EXTRA_KEYS[kind]
    cols: dict[str, list] = {k: [] for k in keys}
    step = max(1, n // 100)
    report(progress, 0, n, f"{kind}/{split}")
    for i in range(n):
        item = make_image(kind, split, i, seed)
        for k in keys:
            cols[k].append(item[k])
        if (i + 1) % step == 0 or i + 1 == n:
            report(progress, i + 1, n, f"{kind}/{split}")
    out = {
        "images": np.stack(cols["image"]) if n else np.zeros((0, SIZE, SIZE, 3), np.uint8),
        "labels": np.asarray(cols["label"], dtype=np.int64),
        "masks": np.stack(cols["mask"]) if n else np.zeros((0, SIZE, SIZE), bool),
        "boxes": np.stack(cols["box"]) if n else np.zeros((0, 4), np.int64),
    }
    for k in EXTRA_KEYS[kind]:
        out["x_" + k] = np.stack([np.asarray(v) for v in cols[k]]) if n else np.zeros((0,))
    return out
