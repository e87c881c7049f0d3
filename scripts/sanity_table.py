"""The README's sanity table: per method, the map against the fully randomised network's map (Spearman ρ,
Adebayo et al.) beside the reference ρ, a second run on the *unchanged* network made the same way
(another seed, another fit), both on the first ``--limit`` test images.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/sanity_table.py --limit 12            # markdown on stdout
    OMP_NUM_THREADS=1 .venv/bin/python scripts/sanity_table.py --model digits-mlp --data digits --methods mipin

Every map is made the same way on both networks (``explainers.sanity``): a method whose fitted part
is in use is refitted on each network (MIP-IN on 2,000 images; VarSal's encoder and the
controller's generator with a short fit), so the amortised methods get two rows: ``refit`` and
``per-image`` (their per-image mode on both networks). A randomised ρ says the map follows the
weights only where it is clearly below the reference ρ; a reference near 0 means the method's own
noise hides any difference. The rows are the evaluation's ``sanity`` and ``sanity-reference``
metrics, in resumable JSON-lines files under ``--out`` (``scripts/evaluate_table.py`` shares them).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from explainers import load_classifier  # noqa: E402
from explainers.data import load_dataset  # noqa: E402
from explainers.errors import ExplainerError  # noqa: E402
from explainers.evaluation import evaluate, summarise  # noqa: E402
from explainers.sanity import NETWORK_FITS, SameWay  # noqa: E402

# (row, method, params): the fast settings of scripts/evaluate_table.py (FAST), so the files are shared
ROWS = [
    ("pmi-ig", "pmi-ig", {}),
    ("dssr", "dssr", {"iterations": 50}),
    ("varsal · refit", "varsal", {"steps": 20}),
    ("varsal · per-image", "varsal", {"mode": "per-image", "steps": 50}),
    ("dcontrol · refit", "dcontrol", {"iterations": 20}),
    ("dcontrol · per-image", "dcontrol", {"generator": "optimise", "iterations": 100}),
    ("mipin", "mipin", {}),
    ("occlusion", "occlusion", {}),
    ("integrated-gradients", "integrated-gradients", {}),
    ("gradcam", "gradcam", {}),
    ("saliency", "saliency", {}),
    ("rise", "rise", {"masks": 500}),
]
METRICS = ["sanity", "sanity-reference"]


def fmt(s: dict) -> str:
    if not s.get("n"):
        return "n/a"
    return f"{s['mean']:.2f} ± {(s['ci95'][1] - s['ci95'][0]) / 2:.2f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="shapes-resnet")
    ap.add_argument("--data", default="shapes")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=12)
    ap.add_argument("--methods", default=None, help="methods to include (default: every row)")
    ap.add_argument("--out", default="runs/table")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--fit-set", action="append", default=[], metavar="METHOD.KEY=VALUE",
                    help="change a sanity fit's size, e.g. varsal.steps=300 or mipin.samples=500 (recorded in the "
                         "results files' headers, so other sizes are never mixed in)")
    args = ap.parse_args(argv)
    for item in args.fit_set:
        key, value = item.split("=", 1)
        method, opt = key.split(".", 1)
        spec = NETWORK_FITS[method]
        NETWORK_FITS[method] = (dataclasses.replace(spec, samples=int(value)) if opt == "samples"
                                else dataclasses.replace(spec, short={**spec.short, opt: json.loads(value)}))
    if "OMP_NUM_THREADS" in __import__("os").environ:
        torch.set_num_threads(int(__import__("os").environ["OMP_NUM_THREADS"]))

    clf = load_classifier(args.model, device=args.device)
    ds = load_dataset(args.data, args.split, limit=args.limit)
    keep = None if not args.methods else {m.strip() for m in args.methods.split(",")}
    lines, notes = [], []
    for row, m, params in ROWS:
        if keep is not None and m not in keep and row not in keep:
            continue
        t0 = time.perf_counter()
        tag = "" if row == m or row.endswith("refit") else "_perimage"
        tag += "".join(f"_{s.replace('=', '')}" for s in args.fit_set if s.startswith(m + "."))
        try:
            with SameWay(m, params) as way:
                how, ref_how = way.how, way.reference_how
            rows = evaluate(clf, ds, m, METRICS, Path(args.out) / f"{clf.id}_{args.data}_{m}{tag}_sanity.jsonl", params, limit=args.limit)
        except ExplainerError as e:
            notes.append(f"{row}: {e}")
            continue
        s = summarise(rows, METRICS)
        sec = time.perf_counter() - t0
        print(f"{row}: {sec:.0f} s", file=sys.stderr)
        lines.append(f"| {row} | {fmt(s['sanity'])} | {fmt(s['sanity-reference'])} | {s['sanity']['n']} | {how}; reference: {ref_how} |")
    print(f"Sanity on the first {args.limit} images of the {args.data} {args.split} split with {clf.id}: Spearman ρ of "
          "the map against the fully randomised network's map, beside the reference ρ (a second run on the unchanged "
          "network made the same way); mean ± 95% CI half-width; target = the true class.\n")
    print("| method | randomised ρ ↓ | reference ρ (same network) ↑ | n | how the maps are made |")
    print("|---|---|---|---|---|")
    print("\n".join(lines))
    for n in notes:
        print(f"\n- {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
