"""DSSR+ at the app's defaults against Occlusion and a random map (paper 001, Section 4).

    .venv/bin/python scripts/dssr_table.py [--models shapes-resnet,shapes-vgg] [--seeds 0,1] [--limit 100]
        [--constant] [--set key=value ...]

For each classifier and each draw of the shapes test split (``--seeds``: 0 is the built-in test
split; other seeds are the same generator drawing other shapes, textures and places), explains the
true class of the first ``--limit`` images and prints one markdown row per method:

- **pointing**: the map's maximum on the object's pixels (every maximal pixel inside), on its
  silhouette (a ring's hole filled: a ring is a circle with a hole, and an averaged mask around it
  peaks in the hole), and in its box;
- **top-10% drop**: the target's probability on the image minus on the image with the map's top
  10% pixels replaced by the blurred image (σ = side / 16), the same deletion for every method;
  **random 10%** is the same with 10% of the pixels drawn at random (mean of 4 draws per image);
- for DSSR+: the reference used (``auto``'s choice), the two-stage λ's work — share of images
  whose preserved image lost the class (f(preserved) ≤ θ·f(x)) at some iteration and the mean
  number of such iterations; share of images where the small λ was used, its mean number of
  iterations and the median first one —
  and what the schedule is for: the share of final preserved images still classified as the
  target (top-1), the share whose probability stays above θ·f(x) (the schedule's own criterion),
  their probability relative to the image's, and the mean mask m̄ (the share of the image
  highlighted).

``--constant`` adds a DSSR+ row with a constant λ (``lam_small=1``), for the schedule's effect;
``--set key=value`` changes DSSR+'s settings (e.g. ``--set reference=noise`` for the paper's).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FRACTION, N_RANDOM = 0.1, 4


def deletion_drops(clf, x01, target: int, saliency: np.ndarray, seed: int) -> tuple[float, float]:
    """(drop with the top 10% of ``saliency`` blurred, mean drop with a random 10% blurred)."""
    import torch

    from explainers.curves import reveal_masks
    from explainers.methods.references import reference

    blurred = reference("blur", x01)
    top = torch.from_numpy(reveal_masks(saliency, [FRACTION])[0]).float()  # 1 = among the top (ties shared)
    g = torch.Generator().manual_seed(seed)
    n = saliency.size
    rand = torch.zeros(N_RANDOM, n)
    for k in range(N_RANDOM):
        rand[k, torch.randperm(n, generator=g)[: round(FRACTION * n)]] = 1.0
    dels = torch.cat([top[None], rand.reshape(N_RANDOM, *saliency.shape)])[:, None]  # 1 = replaced
    with torch.no_grad():
        p = clf.probabilities(torch.cat([x01, (1 - dels) * x01 + dels * blurred]))[:, target]
    return float(p[0] - p[1]), float(p[0] - p[2:].mean())


def measure(clf, ds, method: str, params: dict, limit_seconds: list) -> dict:
    from scipy import ndimage

    from explainers import explain
    from explainers.metrics import pointing_game, random_map

    rows = []
    for i, item in enumerate(ds):
        x01 = clf.pixels(item.image)[None]
        t0 = time.perf_counter()
        if method == "random":
            m, meta = random_map(x01.shape[-2:], seed=i), {}
        else:
            r = explain(clf, x01[0], method, target=item.label, **params)
            m, meta = next(iter(r.maps.values())), r.meta
        limit_seconds.append(time.perf_counter() - t0)
        drop, rand = deletion_drops(clf, x01, item.label, m, seed=1000 + i)
        row = {"px": pointing_game(m, np.asarray(item.mask)), "sil": pointing_game(m, ndimage.binary_fill_holes(item.mask)),
               "box": pointing_game(m, item.box), "drop": drop, "rand": rand}
        if method == "dssr":
            e = r.extras
            row.update(ref=meta["reference"]["kind"], small=meta["small_lambda_iterations"], first=meta["first_small_lambda"],
                       lost=meta["lost_iterations"],
                       keep=int(np.argmax(clf.probabilities(_preserved(e))[0].numpy()) == item.label),
                       ratio=e["probabilities"]["preserved"] / max(e["probabilities"]["original"], 1e-12), mask=float(m.mean()))
        rows.append(row)
    return {k: [r[k] for r in rows] for k in rows[0]}


def _preserved(extras):
    import torch

    return torch.from_numpy(extras["preserved_image"]).permute(2, 0, 1)[None].float().div(255)


def _parse_sets(sets: list[str]) -> dict:
    out = {}
    for s in sets:
        k, _, v = s.partition("=")
        out[k.strip()] = v.strip()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="shapes-resnet,shapes-vgg")
    ap.add_argument("--seeds", default="0,1", help="shapes generator seeds (0 = the built-in test split)")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--constant", action="store_true", help="add DSSR+ with a constant λ (lam_small=1)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a DSSR+ setting (repeatable)")
    ap.add_argument("--no-occlusion", action="store_true")
    args = ap.parse_args(argv)
    import torch

    from explainers import load_classifier
    from explainers.data import load_dataset

    torch.set_num_threads(1)  # the machine is shared; the figures do not depend on it
    dssr = _parse_sets(args.set)
    from explainers.core import make_config

    theta = make_config("dssr", **dssr).theta  # "keeps" = the two-stage λ's own criterion, f(preserved) > θ·f(x)
    print("| model | data | method | pointing (object) ↑ | (silhouette) | (box) | top-10% drop ↑ | random 10% | reference | "
          "class lost: images (its) | small λ used (its, first) | preserved keeps top-1 | keeps > θ·p(x) | p(preserved)/p(x) | mask | n | s/img |")
    print("|" + "---|" * 18)
    for model in args.models.split(","):
        clf = load_classifier(model.strip(), device="cpu")
        for seed in (int(s) for s in args.seeds.split(",")):
            ds = load_dataset("shapes", "test", limit=args.limit, seed=seed)
            data = "shapes test" if seed == 0 else f"shapes test, seed {seed}"
            runs = [("DSSR+", "dssr", dssr)]
            if args.constant:
                runs.append(("DSSR+ constant λ", "dssr", {**dssr, "lam_small": 1.0}))
            if not args.no_occlusion:
                runs.append(("Occlusion", "occlusion", {}))
            runs.append(("random", "random", {}))
            for name, method, params in runs:
                secs: list = []
                r = measure(clf, ds, method, params, secs)
                cells = [f"{np.mean(r['px']):.2f}", f"{np.mean(r['sil']):.2f}", f"{np.mean(r['box']):.2f}", f"{np.mean(r['drop']):.3f}",
                         f"{np.mean(r['rand']):.3f}"]
                if method == "dssr":
                    refs = sorted(set(r["ref"]))
                    used = np.array(r["small"]) > 0
                    firsts = [f for f in r["first"] if f is not None]
                    lost = np.array(r["lost"])
                    cells += [", ".join(refs), f"{np.mean(lost > 0):.0%} ({lost.mean():.1f})",
                              f"{used.mean():.0%} ({np.mean(r['small']):.1f}, {np.median(firsts):.0f})" if firsts else "0%",
                              f"{np.mean(r['keep']):.0%}", f"{np.mean(np.array(r['ratio']) > theta):.0%}",
                              f"{np.mean(r['ratio']):.3f}", f"{np.mean(r['mask']):.4f}"]
                else:
                    cells += [""] * 7
                print(f"| {model} | {data} | {name} | " + " | ".join(cells) + f" | {len(r['px'])} | {np.mean(secs):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
