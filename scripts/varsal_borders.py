"""Does VarSal's uncertainty concentrate on object borders (paper 002, Sec. 4.1 / Fig. 7)?

    .venv/bin/python scripts/varsal_borders.py [--model shapes-resnet] [--limit 200] [--width 2]

On the built-in shapes test split (which has every object's mask), splits each image into three
regions from the object mask: the *border* band (pixels within ``--width`` px of the mask's edge,
inside or out), the object's *interior* and the *background*; then reports the mean posterior
standard deviation in each region, the border/interior and border/background ratios, and the
share of images whose border is the most uncertain region. A claim that "the uncertainty sits on
the borders" predicts ratios above 1 and a large share.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def regions(mask: np.ndarray, width: int) -> dict[str, np.ndarray]:
    m = mask.astype(bool)
    grown = ndimage.binary_dilation(m, iterations=width)
    shrunk = ndimage.binary_erosion(m, iterations=width)
    border = grown & ~shrunk
    return {"border": border, "interior": shrunk, "background": ~grown}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="shapes-resnet")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--width", type=int, default=2)
    args = ap.parse_args()

    from tqdm import tqdm

    from explainers import explain, load_classifier
    from explainers.data import load_dataset

    clf = load_classifier(args.model, device="cpu")
    ds = load_dataset("shapes", "test", limit=args.limit)
    means: dict[str, list[float]] = {"border": [], "interior": [], "background": []}
    border_first = 0
    used = 0
    for item in tqdm(ds, desc="varsal std", leave=False):
        std = explain(clf, item.image, "varsal", target=item.label).maps["std"]
        reg = regions(np.asarray(item.mask), args.width)
        if not reg["interior"].any():  # too thin to have an interior at this width
            continue
        vals = {k: float(std[v].mean()) for k, v in reg.items()}
        for k, v in vals.items():
            means[k].append(v)
        border_first += vals["border"] == max(vals.values())
        used += 1
    b, i, g = (np.array(means[k]) for k in ("border", "interior", "background"))
    print(f"{args.model}, shapes test, {used} images with an interior (border band ±{args.width} px)")
    print(f"mean std: border {b.mean():.4f}  interior {i.mean():.4f}  background {g.mean():.4f}")
    print(f"border / interior {np.mean(b / i):.3f}   border / background {np.mean(b / g):.3f}")
    print(f"border the most uncertain region in {border_first / max(used, 1):.0%} of images")


if __name__ == "__main__":
    main()
