"""Why MIP-IN's map on digits-mlp survives randomising the network (sanity ρ 0.78 against a fit-to-fit
reference of 0.85, ``scripts/sanity_table.py --model digits-mlp --data digits --methods mipin``): the
map follows the per-pixel standard deviation of the training images, a property of the data that
any fitted inverse of any network reproduces, more than the image itself.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/sanity_mipin_prior.py [--limit 12]

Prints, per classifier, the mean Spearman ρ (first ``--limit`` test images, true class, committed
fit) of the MIP-IN map against |image − its mean colour| and against the training pixels' s.d.
(first 2,000 training images, summed over the colour channels).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from explainers import explain, load_classifier  # noqa: E402
from explainers.data import load_dataset  # noqa: E402
from explainers.sanity import similarity  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="digits-mlp:digits,shapes-resnet:shapes")
    ap.add_argument("--limit", type=int, default=12)
    args = ap.parse_args(argv)
    for pair in args.models.split(","):
        model, data = pair.split(":")
        clf = load_classifier(model, device="cpu")
        x_train, _ = load_dataset(data, "train", limit=2000).arrays(size=tuple(clf.input_size))
        sd = x_train.astype(np.float64).std(0).sum(-1)
        img, prior = [], []
        for it in load_dataset(data, "test", limit=args.limit):
            x = clf.pixels(it.image)
            x = (x[0] if x.dim() == 4 else x).numpy()
            m = explain(clf, it.image, "mipin", target=it.label).maps["attribution"]
            img.append(similarity(m, np.abs(x - x.mean((1, 2), keepdims=True)).sum(0))["spearman"])
            prior.append(similarity(m, sd)["spearman"])
        print(f"{model}: rho(map, |image - mean colour|) = {np.nanmean(img):.3f}, rho(map, training pixel s.d.) = {np.nanmean(prior):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
