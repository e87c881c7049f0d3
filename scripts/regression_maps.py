"""Record (or check) the maps of every method on a fixed set of images, classifiers and seeds.

    python scripts/regression_maps.py            # write tests/fixtures/regression_maps.npz
    python scripts/regression_maps.py --check    # recompute and compare, exactly

``tests/test_regression.py`` runs the check: a refactoring must leave every map bit-identical.
A change that is meant to change maps rewrites the file with this command and says so in its commit.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "regression_maps.npz"
sys.path.insert(0, str(ROOT))

# (classifier, dataset, test index, method, params): fast settings, every map kind, both modes of
# the amortised methods.
CASES = [
    ("shapes-resnet", "shapes", 0, "pmi-ig", dict(K=8, N=2, stride=8, seed=0)),
    ("shapes-resnet", "shapes", 1, "pmi-ig", dict(K=8, N=2, stride=8, sampler="gaussian", seed=3)),
    ("shapes-resnet", "shapes", 2, "dssr", dict(iterations=15, seed=0)),
    ("shapes-resnet", "shapes", 0, "varsal", dict()),
    ("shapes-resnet", "shapes", 1, "varsal", dict(mode="per-image", steps=4, n_mc=2, batch_size=2, seed=1)),
    ("shapes-resnet", "shapes", 0, "dcontrol", dict()),
    ("shapes-resnet", "shapes", 2, "dcontrol", dict(generator="optimise", iterations=4, seed=2)),
    ("shapes-resnet", "shapes", 0, "mipin", dict()),
    ("shapes-vgg", "shapes", 1, "mipin", dict()),
    ("digits-mlp", "digits", 0, "mipin", dict()),
    ("digits-cnn", "digits", 1, "pmi-ig", dict(K=8, N=2, stride=8, seed=0)),
    ("digits-cnn", "digits", 1, "dcontrol", dict()),
    ("shapes-resnet", "shapes", 3, "occlusion", dict()),
    ("shapes-resnet", "shapes", 3, "integrated-gradients", dict(steps=8)),
    ("shapes-resnet", "shapes", 3, "gradcam", dict()),
    ("shapes-resnet", "shapes", 3, "saliency", dict()),
    ("shapes-resnet", "shapes", 3, "rise", dict(masks=50, seed=0)),
]


def compute() -> dict[str, np.ndarray]:
    from explainers import explain, load_classifier
    from explainers.data import load_dataset

    out: dict[str, np.ndarray] = {}
    clfs: dict[str, object] = {}
    for i, (model, data, index, method, params) in enumerate(CASES):
        clf = clfs.setdefault(model, load_classifier(model, device="cpu"))
        image = load_dataset(data, "test", limit=index + 1)[index].image
        result = explain(clf, image, method, **params)
        for name, arr in result.maps.items():
            out[f"{i:02d}.{model}.{method}.{name}"] = arr
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the recorded maps instead of writing them")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # one reduction order, so the numbers do not depend on the core count
    maps = compute()
    if not args.check:
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(FIXTURE, **maps)
        print(f"wrote {len(maps)} maps to {FIXTURE.relative_to(ROOT)}")
        return 0
    bad = differences(maps)
    for line in bad:
        print(line)
    return 1 if bad else 0


def differences(maps: dict[str, np.ndarray]) -> list[str]:
    with np.load(FIXTURE) as z:
        ref = {k: z[k] for k in z.files}
    bad = [f"missing or extra: {k}" for k in sorted(set(ref) ^ set(maps))]
    for k in sorted(set(ref) & set(maps)):
        if ref[k].shape != maps[k].shape or not np.array_equal(ref[k], maps[k]):
            bad.append(f"{k}: max |diff| {np.abs(ref[k].astype(np.float64) - maps[k]).max():.3g}")
    return bad


if __name__ == "__main__":
    sys.exit(main())
