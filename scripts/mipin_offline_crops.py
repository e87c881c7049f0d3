"""Augmented crops of the offline photographs that are NOT the real-network table's seven, as an
image folder to fit MIP-IN's inverses on (a held-out fit: issue #24).

    .venv/bin/python scripts/mipin_offline_crops.py --out runs/mipin_crops            # 150 crops a photograph
    python -m explainers fit --explainer mipin --model efficientnet-lite0 --data runs/mipin_crops

Sources: every photograph shipped with scikit-image (``skimage/data``; grey ones made RGB, RGBA ones
put on white) except the evaluation photographs and their scene (astronaut, chelsea, coffee, rocket,
both stereo_motorcycle views); scikit-learn ships only china and flower, both evaluation photographs.
Layout ``OUT/{train,val}/<photograph>/<i>.png`` at 224 × 224; the ``val`` photographs (``--val``) are
other photographs than the ``train`` ones, so the fit's held-out R² is measured on unseen scenes.

Each crop (seeded per photograph and index, so the folder is the same on every machine): a random
resized crop (area 8–100% of the photograph, aspect 3/4–4/3, as ImageNet training does), a
horizontal flip with probability 1/2, and colour jitter (brightness, contrast, saturation each ×
U(0.6, 1.4)).
"""
from __future__ import annotations

import argparse
import math
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

# the seven photographs of scripts/imagenet_table.py, and the other view of the motorcycle scene
EXCLUDED = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png")
VAL = ("coins", "retina", "grass")


def sources() -> dict[str, Image.Image]:
    """The held-out photographs by name (RGB), from the installed scikit-image (no download)."""
    import skimage

    d = Path(skimage.__file__).parent / "data"
    out = {}
    for f in sorted(d.iterdir()):
        if f.suffix.lower() not in (".png", ".jpg") or f.name in EXCLUDED:
            continue
        try:
            im = Image.open(f)
            im.load()
        except OSError:
            continue
        if min(im.size) < 64:  # icons, not photographs
            continue
        if im.mode in ("RGBA", "LA"):
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im.convert("RGBA"))
        out[f.stem] = im.convert("RGB")
    return out


def crop(im: Image.Image, rng: np.random.Generator, size: int = 224) -> Image.Image:
    """One augmented crop (see the module docstring)."""
    w, h = im.size
    for _ in range(10):
        area = w * h * rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = int(round(math.sqrt(area * ratio))), int(round(math.sqrt(area / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            break
    else:
        cw = ch = min(w, h)
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = im.crop((x0, y0, x0 + cw, y0 + ch)).resize((size, size), Image.BILINEAR)
    if rng.random() < 0.5:
        out = ImageOps.mirror(out)
    for enh in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        out = enh(out).enhance(float(rng.uniform(0.6, 1.4)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/mipin_crops")
    ap.add_argument("--per-photo", type=int, default=150, help="crops per training photograph (default 150)")
    ap.add_argument("--val-per-photo", type=int, default=50, help="crops per val photograph (default 50)")
    ap.add_argument("--val", default=",".join(VAL), help="photographs kept for the held-out split")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    val = {v.strip() for v in args.val.split(",") if v.strip()}
    src = sources()
    root = Path(args.out)
    n = 0
    for name, im in src.items():
        split, count = ("val", args.val_per_photo) if name in val else ("train", args.per_photo)
        d = root / split / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rng = np.random.default_rng([args.seed, zlib.crc32(name.encode()), i])
            crop(im, rng).save(d / f"{i:04d}.png")
            n += 1
    print(f"{n} crops of {len(src)} photographs ({', '.join(src)}) in {root}; val: {', '.join(sorted(val & set(src)))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
