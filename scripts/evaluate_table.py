"""The README's metrics table: every method and baseline on the built-in shapes test split.

    .venv/bin/python scripts/evaluate_table.py --limit 48 --sanity-limit 12     # markdown on stdout
    .venv/bin/python scripts/evaluate_table.py --plot runs/table/means.png      # the same, plus a plot
    .venv/bin/python scripts/evaluate_table.py --ray                             # on a local Ray (or --ray auto)

Each method is evaluated with ``explainers.evaluation.evaluate`` (resumable: the JSON-lines files
under ``--out`` are reused, so an interrupted run continues where it stopped). Slow methods run
with the fast settings in ``FAST`` (printed in the caption). The sanity column is the Spearman
rank correlation between each map and the map of the fully randomised network (Adebayo et al.;
near 0 passes, near 1 fails), on the first ``--sanity-limit`` images, both maps made the same way
(a fitted part in use, MIP-IN's inverse, VarSal's encoder, the controller's generator, is refitted
on each network: ``explainers.sanity``); the next column is the reference, the same correlation
between two runs on the unchanged network made the same way (another seed or fit): the sanity
figure means something only where it is clearly below it. ``scripts/sanity_table.py`` adds the
amortised methods' per-image rows and shares these files. A random map is the control row (it
ignores the model, so it fails the sanity check by construction).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from explainers import load_classifier  # noqa: E402
from explainers.core import METHODS, MethodOutput, MethodSpec, get_method, register  # noqa: E402
from explainers.data import load_dataset  # noqa: E402
from explainers.errors import ExplainerError  # noqa: E402
from explainers.evaluation import evaluate, plot_summary, summarise, summary_table  # noqa: E402
from explainers.metrics import random_map  # noqa: E402

ORDER = ["pmi-ig", "dssr", "varsal", "dcontrol", "mipin", "occlusion", "integrated-gradients", "gradcam", "saliency", "rise", "random"]
# fast settings where the defaults take seconds per image on a CPU (the defaults are in each method's config);
# PMI runs at its default stride 4: at stride 8 its 8-pixel blocks tie for the maximum and the
# pointing game's strict tie rule (every maximal pixel inside) counts most of them as misses
FAST = {
    "dssr": {"iterations": 50},
    "rise": {"masks": 500},
    "varsal": {"steps": 20},  # per-image optimisation only: the sanity columns refit the encoder on each network
    "dcontrol": {"iterations": 20},  # likewise (the generator)
}
MAIN = ["pointing", "bbox-accuracy", "deletion", "insertion"]
SANITY = ["sanity", "sanity-reference"]


@dataclass(frozen=True)
class RandomConfig:
    """A uniformly random map (the control)."""

    seed: int = 0


def _run_random(clf, x01, target, cfg: RandomConfig, progress=None) -> MethodOutput:
    return MethodOutput({"random": random_map(tuple(clf.input_size), cfg.seed)})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="shapes-resnet")
    ap.add_argument("--data", default="shapes")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=48)
    ap.add_argument("--sanity-limit", type=int, default=12, help="images for the sanity column (the slow one)")
    ap.add_argument("--methods", default=",".join(ORDER))
    ap.add_argument("--out", default="runs/table")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--plot", default=None)
    ap.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                    help="run on Ray: a local instance sized to this machine, or join ADDRESS (auto, ray://host:port)")
    ap.add_argument("--ray-cpus-per-worker", type=float, default=1, metavar="N", help="CPUs per Ray worker without GPUs")
    args = ap.parse_args(argv)

    get_method("occlusion")
    if "random" not in METHODS:
        register(MethodSpec("random", "Random map (control)", RandomConfig, _run_random, {"random": "positive"}, {"random": ""}))
    clf = load_classifier(args.model, device=args.device)
    ds = load_dataset(args.data, args.split, limit=args.limit)
    out = Path(args.out)
    slimit = min(args.limit, args.sanity_limit)
    run = evaluate
    if args.ray is not None:  # one Ray for every method (each call makes its workers); same files as a serial run
        from functools import partial

        from explainers.evaluation_ray import connect, evaluate_ray

        connect(args.ray or None)
        run = partial(evaluate_ray, model=args.model, device=args.device, cpus_per_worker=args.ray_cpus_per_worker)
    summaries, notes, seconds = {}, [], {}
    for m in [s.strip() for s in args.methods.split(",") if s.strip()]:
        params = FAST.get(m, {})
        t0 = time.perf_counter()
        try:
            # the random control is registered in this process only: it runs here
            rows = (evaluate if m == "random" else run)(clf, ds, m, MAIN, out / f"{clf.id}_{args.data}_{m}.jsonl", params, limit=args.limit)
            summ = summarise(rows, MAIN)
        except ExplainerError as e:
            notes.append(f"{m}: {e}")
            continue
        try:
            srows = (evaluate if m == "random" else run)(clf, ds, m, SANITY, out / f"{clf.id}_{args.data}_{m}_sanity.jsonl", params, limit=slimit)
            summ.update(summarise(srows, SANITY))
        except ExplainerError as e:
            summ.update({k: {"n": 0} for k in SANITY})
            notes.append(f"{m} sanity: n/a ({str(e).split(': ', 2)[-1].split(';')[0]})")
        summaries[m] = summ
        seconds[m] = time.perf_counter() - t0
        print(f"{m}: {seconds[m]:.0f} s", file=sys.stderr)
    cols = MAIN + SANITY
    fast = "; ".join(f"{m} " + ", ".join(f"{k}={v}" for k, v in p.items()) for m, p in FAST.items())
    print(f"Methods on the {args.data} {args.split} split with {clf.id} (first {args.limit} images; sanity on the first "
          f"{slimit}); mean ± 95% CI half-width. ↑ higher is better, ↓ lower is better. Fast settings: {fast}; "
          "other methods at their defaults. Deletion: black baseline, insertion: blurred image, 32 steps each; "
          "target = the true class; sanity = Spearman(map, map of the fully randomised network, made the same way: "
          "MIP-IN's inverse, VarSal's encoder and the controller's generator refitted on each network), near 0 passes "
          "where sanity-reference (two runs on the unchanged network made the same way: another seed or fit) is high.\n")
    print(summary_table(summaries, cols))
    for n in notes:
        print(f"\n- {n}")
    if args.plot:
        plot_summary(summaries, cols, Path(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
