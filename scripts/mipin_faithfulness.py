"""How faithful are MIP-IN's maps, and how stable are its fits? (issue 18, paper 004)

    .venv/bin/python scripts/mipin_faithfulness.py [--model shapes-resnet,shapes-vgg|all] [--limit 200]
        [--fits DIR] [--fit-sizes 300,1000] [--rho-limit 50] [--no-occlusion] [--json FILE]

On the first ``--limit`` images of a test split (shapes for the shapes classifiers, shapes-biased
for shapes-biased-resnet, digits for the digits ones), for the top-1 class, with the fit the method
would use (the user's fit first, then the committed one; ``--fits DIR`` reads
``DIR/<model>/mipin.safetensors`` instead), it prints per classifier:

- ``drop``: mean drop of the target's probability when the top 10% of the pixels of MIP-IN's
  positive attribution are replaced by the blurred image (σ = side/16, M_F's reference);
  ``occ``: the same for Occlusion's positive part (the registered ``occlusion``, window 8,
  stride 4); ``rnd``: for a uniformly random 10%; ``ratio`` = drop / occ;
- ``MF``, ``MF_rev``, ``MF_rnd``: M_F (paper 003, Eq. 8, ``explainers.metrics.m_f``) of the map,
  of its reversal (−map) and of a uniformly random map;
- ``pt_box``, ``pt_mask``: pointing game — the map's maximum inside the object's bounding box
  (paper 004's localisation criterion), inside its silhouette (holes filled; shapes only);
- ``rho12``: mean Spearman ρ between the maps for the top-1 and the top-2 class of an image
  (class sensitivity, paper 004 Section 6.4: lower is more class-selective);
- with ``--fit-sizes``: ``rho@N``, the mean Spearman ρ (``explainers.sanity.similarity``, signed
  maps) between the maps of two fits of N training images each — images 0..N-1 with seed 0 and
  N..2N-1 with seed 1, every other option at its default — on the first ``--rho-limit`` test
  images: how much of a sanity-check difference is fit noise.

Fits for ``rho`` go to a temporary folder; nothing is written elsewhere. One CPU thread.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = {"shapes-resnet": "shapes", "shapes-vgg": "shapes", "shapes-biased-resnet": "shapes-biased",
        "digits-cnn": "digits", "digits-mlp": "digits"}
FRACTION = 0.1


def _pixels(ds, clf) -> torch.Tensor:
    xs, _ = ds.arrays(size=tuple(clf.input_size))
    return torch.from_numpy(xs).permute(0, 3, 1, 2).float() / 255


def mipin_maps(clf, x: torch.Tensor, targets: list[int], fit: str | None, batch: int = 50) -> np.ndarray:
    from explainers.methods import mipin as M

    cfg = M.MIPINConfig(fit=fit)
    out = [M.explain_batch(clf, x[i : i + batch], targets[i : i + batch], cfg)["maps"] for i in range(0, len(x), batch)]
    return torch.cat(out).cpu().numpy().astype(np.float64)


def blurred_top(clf, x: torch.Tensor, maps: np.ndarray, targets: list[int]) -> np.ndarray:
    """Drop of the target's probability with the top 10% of each map's positive part blurred."""
    from explainers.curves import reveal_masks
    from explainers.methods.references import blur

    ref = blur(x, min(clf.input_size) / 16.0)
    keep = torch.from_numpy(np.stack([reveal_masks(np.maximum(m, 0), [FRACTION])[0] for m in maps])).float()[:, None]
    ar = torch.arange(len(x))
    t = torch.as_tensor(targets)
    p = clf.probabilities(x)[ar, t]
    q = clf.probabilities(x * (1 - keep) + ref * keep)[ar, t]
    return (p - q).cpu().numpy()


def fit_pair(clf, data: str, n: int, tmp: Path) -> tuple[str, str, float]:
    """Two fits of ``n`` training images: images [0, n) with seed 0 and [n, 2n) with seed 1."""
    from explainers.data import ArrayDataset, load_dataset
    from explainers.training import mipin as T

    ds = load_dataset(data, "train", limit=2 * n)
    if len(ds) < 2 * n:
        raise SystemExit(f"{data} has only {len(ds)} training images; --fit-sizes {n} needs {2 * n}")
    imgs, labels = ds.arrays()
    paths, start = [], time.perf_counter()
    for j, (lo, hi) in enumerate(((0, n), (n, 2 * n))):
        part = ArrayDataset(ds.name, ds.split, ds.classes, imgs[lo:hi], labels[lo:hi])
        paths.append(str(T.fit(clf, part, out_dir=tmp / f"{clf.id}-{n}-{j}", seed=j)))
    return paths[0], paths[1], (time.perf_counter() - start) / 2


def measure(model: str, limit: int, fits: str | None, fit_sizes: list[int], rho_limit: int, occlusion: bool) -> dict:
    from scipy.ndimage import binary_fill_holes

    from explainers import explain, load_classifier
    from explainers.data import load_dataset
    from explainers.methods import mipin as M
    from explainers.metrics import m_f, pointing_game, random_map
    from explainers.sanity import similarity

    clf = load_classifier(model, device="cpu")
    data = DATA.get(model, clf.dataset)
    ds = load_dataset(data, "test", limit=limit)
    x = _pixels(ds, clf)
    targets = clf.probabilities(x).argmax(1).tolist()
    fit = str(Path(fits) / model / "mipin.safetensors") if fits else None
    used = M.choose_fit(clf, M.MIPINConfig(fit=fit), targets[0])
    start = time.perf_counter()
    maps = mipin_maps(clf, x, targets, fit)
    ms_per_map = 1000 * (time.perf_counter() - start) / len(x)
    rnd = np.stack([random_map(tuple(clf.input_size), seed=i) for i in range(len(x))])
    row = {"model": model, "n": len(x), "fit": used.path, "fit_images": used.card.get("n_samples"),
           "ms_per_map": round(ms_per_map, 1),
           "drop": float(blurred_top(clf, x, maps, targets).mean()), "rnd": float(blurred_top(clf, x, rnd, targets).mean())}
    if occlusion:
        occ = np.stack([explain(clf, ds[i].image, "occlusion", target=targets[i], window=8, stride=4).maps["occlusion"]
                        for i in range(len(x))]).astype(np.float64)
        row["occ"] = float(blurred_top(clf, x, occ, targets).mean())
        row["ratio"] = row["drop"] / row["occ"] if row["occ"] > 0 else float("nan")
    row["MF"] = float(np.nanmean([m_f(clf, x[i], maps[i], targets[i]) for i in range(len(x))]))
    row["MF_rev"] = float(np.nanmean([m_f(clf, x[i], -maps[i], targets[i]) for i in range(len(x))]))
    row["MF_rnd"] = float(np.nanmean([m_f(clf, x[i], rnd[i], targets[i]) for i in range(len(x))]))
    second = clf.probabilities(x).argsort(1, descending=True)[:, 1].tolist()
    maps2 = mipin_maps(clf, x, second, fit)
    row["rho12"] = float(np.nanmean([similarity(maps[i], maps2[i])["spearman"] for i in range(len(x))]))
    boxes, masks = ds.boxes(), ds.masks()
    if boxes is not None:
        row["pt_box"] = float(np.mean([pointing_game(maps[i], tuple(boxes[i])) for i in range(len(x))]))
    if masks is not None and data.startswith("shapes"):
        row["pt_mask"] = float(np.mean([pointing_game(maps[i], binary_fill_holes(masks[i])) for i in range(len(x))]))
    with tempfile.TemporaryDirectory(prefix="mipin-rho-") as tmp:
        for n in fit_sizes:
            a, b, secs = fit_pair(clf, data, n, Path(tmp))
            k = min(rho_limit, len(x))
            ma, mb = mipin_maps(clf, x[:k], targets[:k], a), mipin_maps(clf, x[:k], targets[:k], b)
            row[f"rho@{n}"] = float(np.nanmean([similarity(ma[i], mb[i])["spearman"] for i in range(k)]))
            row[f"fit_s@{n}"] = round(secs, 1)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="all", help="comma-separated classifier ids, or all (the five embedded ones)")
    ap.add_argument("--limit", type=int, default=200, help="first N test images (default 200)")
    ap.add_argument("--fits", default=None, help="read DIR/<model>/mipin.safetensors instead of the usual lookup")
    ap.add_argument("--fit-sizes", default="", help="comma-separated fit sizes N for the fit-to-fit ρ (default: none)")
    ap.add_argument("--rho-limit", type=int, default=50, help="test images for the fit-to-fit ρ (default 50)")
    ap.add_argument("--no-occlusion", action="store_true", help="skip Occlusion (the slowest part)")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # the machine is shared
    models = list(DATA) if args.model == "all" else [m.strip() for m in args.model.split(",") if m.strip()]
    sizes = [int(v) for v in args.fit_sizes.split(",") if v.strip()]
    rows = []
    for m in models:
        rows.append(measure(m, args.limit, args.fits, sizes, args.rho_limit, not args.no_occlusion))
        r = rows[-1]
        cols = [c for c in ("drop", "occ", "ratio", "rnd", "MF", "MF_rev", "MF_rnd", "pt_box", "pt_mask", "rho12") if c in r]
        cols += [c for c in r if c.startswith("rho@") or c.startswith("fit_s@")]
        print(f"{r['model']:21s} n={r['n']} fit={r['fit_images']} images ({r['ms_per_map']} ms/map)  "
              + "  ".join(f"{c} {r[c]:.3f}" if isinstance(r[c], float) else f"{c} {r[c]}" for c in cols), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
