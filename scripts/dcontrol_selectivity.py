"""Is the distribution controller's mask about the class asked for? (issue 18, paper 003)

    .venv/bin/python scripts/dcontrol_selectivity.py [--models shapes-resnet,shapes-vgg] [--limit 200]
        [--transformer customised] [--fits DIR]

On the first ``--limit`` images of a test split (shapes for the shapes classifiers, shapes-biased
for shapes-biased-resnet, digits for the digits ones), with the fitted generator the method would
use (the user's fit first, then the committed one; ``--fits DIR`` reads ``DIR/<model>/`` instead),
it prints per classifier:

- ``rho12``: mean Spearman ρ between the mask for the top-1 class and the mask for the top-2 class
  of the same image (1 = the mask ignores the class; lower is more class-selective); ``rho12_in``
  the same without a frame of side/16 px (4 px at 64), where every mask of a fit tends to put its
  lowest values whatever the class (the classifiers ignore the image's edge);
- ``iou10``: overlap (intersection over union) of the two masks' top 10% of pixels — where the
  masks point, which is what the loss constrains (the low end of a mask barely moves the loss);
- ``point``: pointing game of the top-1 mask, its maximum inside the object's silhouette (holes
  filled, as in tests/test_dcontrol.py; shapes only);
- ``drop1``: mean drop of the top-1 probability when the top 10% of the top-1 mask's pixels are
  replaced by the blurred image (σ = side/16, the method's fine-tuning reference); ``drop_rnd``:
  the same for a uniformly random 10%, the floor;
- ``drop2``: the same for the top-2 mask and the top-2 probability (``p2``: its mean before).

Masks come straight from the generator and the controller (Eq. 4, no fine-tuning), in batches.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = {"shapes-resnet": "shapes", "shapes-vgg": "shapes", "shapes-biased-resnet": "shapes-biased",
        "digits-cnn": "digits", "digits-mlp": "digits"}


def top_fraction_blurred(x: torch.Tensor, ref: torch.Tensor, maps: np.ndarray, fraction: float) -> torch.Tensor:
    """``x`` with the top ``fraction`` of each map's pixels taken from ``ref`` (exact counts, ties split)."""
    from explainers.curves import reveal_masks

    keep = torch.from_numpy(np.stack([reveal_masks(m, [fraction])[0] for m in maps])).float()[:, None]
    return x * (1 - keep) + ref * keep


def measure(model: str, limit: int, transformer: str, fits: str | None, fraction: float, batch: int) -> dict:
    from scipy.ndimage import binary_fill_holes

    from explainers import load_classifier
    from explainers.data import load_dataset
    from explainers.methods import dcontrol as D
    from explainers.methods.references import blur
    from explainers.sanity import similarity

    clf = load_classifier(model, device="cpu")
    cfg = D.DControlConfig(transformer=transformer, generator="fitted",
                           fit=str(Path(fits) / model / D.fit_filename(transformer)) if fits else None)
    gen, card, path = D.choose_generator(clf, cfg)
    ds = load_dataset(DATA.get(model, "shapes"), "test", limit=limit)
    xs, _ = ds.arrays(size=tuple(clf.input_size))
    x_all = torch.from_numpy(xs).permute(0, 3, 1, 2).float() / 255
    masks = ds.masks()
    rng = np.random.default_rng(0)
    rho, rho_in, iou, point, d1, d2, dr, p2s = [], [], [], [], [], [], [], []
    b = max(1, round(min(clf.input_size) / 16))
    inner = (slice(b, -b), slice(b, -b))
    for i in range(0, len(x_all), batch):
        x = x_all[i : i + batch]
        p = clf.probabilities(x)
        order = p.argsort(dim=1, descending=True)
        t1, t2 = order[:, 0], order[:, 1]
        m = []
        for t in (t1, t2):
            with torch.no_grad():
                z, _ = D.generator_z(gen, clf, x, t)
                m.append(D.upsample(D.apply_controller(z, transformer, cfg.eta, cfg.h), clf.input_size)[:, 0].numpy())
        m1, m2 = m
        ref = blur(x, min(clf.input_size) / 16.0)
        rnd = rng.random(m1.shape)
        q1 = clf.probabilities(top_fraction_blurred(x, ref, m1, fraction))
        q2 = clf.probabilities(top_fraction_blurred(x, ref, m2, fraction))
        qr = clf.probabilities(top_fraction_blurred(x, ref, rnd, fraction))
        ar = torch.arange(len(x))
        d1 += (p[ar, t1] - q1[ar, t1]).tolist()
        d2 += (p[ar, t2] - q2[ar, t2]).tolist()
        dr += (p[ar, t1] - qr[ar, t1]).tolist()
        p2s += p[ar, t2].tolist()
        for k in range(len(x)):
            rho.append(similarity(m1[k], m2[k])["spearman"])
            rho_in.append(similarity(m1[k][inner], m2[k][inner])["spearman"])
            t1k, t2k = (m1[k] >= np.quantile(m1[k], 1 - fraction)), (m2[k] >= np.quantile(m2[k], 1 - fraction))
            iou.append((t1k & t2k).sum() / max(1, (t1k | t2k).sum()))
            if masks is not None:
                from explainers.metrics import pointing_game

                point.append(pointing_game(m1[k], binary_fill_holes(masks[i + k])))
    return {
        "model": model, "fit": str(path), "trained": card.get("config", {}).get("targets", "predicted"), "n": len(x_all),
        "rho12": float(np.nanmean(rho)), "rho12_in": float(np.nanmean(rho_in)), "iou10": float(np.mean(iou)), "point": float(np.mean(point)) if point else float("nan"),
        "drop1": float(np.mean(d1)), "drop_rnd": float(np.mean(dr)), "drop2": float(np.mean(d2)), "p2": float(np.mean(p2s)),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="shapes-resnet,shapes-vgg", help="comma-separated classifier ids")
    ap.add_argument("--limit", type=int, default=200, help="first N test images (default 200)")
    ap.add_argument("--transformer", default="customised", choices=("customised", "basic"))
    ap.add_argument("--fits", default=None, help="read DIR/<model>/dcontrol-<transformer>.safetensors instead of the usual lookup")
    ap.add_argument("--fraction", type=float, default=0.1, help="share of pixels blurred for the drops (default 0.1)")
    ap.add_argument("--batch", type=int, default=50)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # the machine is shared
    rows = [measure(m.strip(), args.limit, args.transformer, args.fits, args.fraction, args.batch) for m in args.models.split(",") if m.strip()]
    cols = ["rho12", "rho12_in", "iou10", "point", "drop1", "drop_rnd", "drop2", "p2"]
    print(f"{'model':22s} {'trained on':10s} {'n':>5s} " + " ".join(f"{c:>8s}" for c in cols) + "  fit")
    for r in rows:
        print(f"{r['model']:22s} {r['trained']:10s} {r['n']:5d} " + " ".join(f"{r[c]:8.3f}" for c in cols) + f"  {r['fit']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
