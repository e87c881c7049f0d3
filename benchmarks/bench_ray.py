"""Images per second of ``evaluate`` serially and on a local Ray with 1 and 2 workers.

    .venv/bin/python benchmarks/bench_ray.py [--methods occlusion,pmi-ig] [--images 64] [--cpus 2]
                                             [--metric pointing] [--set pmi-ig:stride=8]

Each method runs on the same first ``--images`` shapes test images with shapes-resnet on the CPU
(``METHOD:N`` in ``--methods`` takes N images for that one), into fresh results files: serially in
this process with torch on every core (``--cpus`` threads), then on a local Ray (started once, not
timed with the runs; its start is printed) with 1 worker holding all ``--cpus`` CPUs and 2 workers
holding half each (torch's threads = the worker's CPUs). A Ray run's time includes starting its
workers (a process each, loading the classifier, the method's fits on the first image), as a real
run pays it; the overhead per image is (Ray with 1 worker − serial) / images. Prints a markdown
table; the figures are wall-clock (run it on a quiet machine).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="shapes-resnet")
    ap.add_argument("--data", default="shapes")
    ap.add_argument("--methods", default="occlusion,pmi-ig", help="METHOD or METHOD:IMAGES, joined by commas")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="cores to use (serial threads, Ray's CPUs)")
    ap.add_argument("--metric", default="pointing", help="metrics scored (cheap by default: the method dominates)")
    ap.add_argument("--set", action="append", default=[], metavar="METHOD:KEY=VALUE", help="a method parameter")
    args = ap.parse_args()

    import torch

    from explainers.classifiers import load_classifier
    from explainers.data import load_dataset
    from explainers.evaluation import evaluate
    from explainers.evaluation_ray import Worker, connect, evaluate_ray

    params: dict[str, dict] = {}
    for s in args.set:
        m, kv = s.split(":", 1)
        k, v = kv.split("=", 1)
        params.setdefault(m, {})[k] = v
    runs = [(m.split(":")[0], int(m.split(":")[1]) if ":" in m else args.images) for m in args.methods.split(",") if m]
    clf = load_classifier(args.model, device="cpu")
    ds = load_dataset(args.data, "test", limit=max(n for _, n in runs))
    metrics = args.metric.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="bench_ray_"))

    import ray

    t = time.perf_counter()
    connect(num_cpus=args.cpus)
    ray_start = time.perf_counter() - t
    w = ray.remote(Worker).options(num_cpus=args.cpus)
    t = time.perf_counter()
    a = w.remote(args.model, None, "cpu", args.cpus, {}, "occlusion", metrics, {}, "occlusion", "label", 0, ds.classes)
    ray.get(a.pid.remote())
    actor_start = time.perf_counter() - t
    ray.kill(a)
    print(f"local Ray start: {ray_start:.1f} s; one worker's start (process, imports, classifier): {actor_start:.1f} s",
          file=sys.stderr)

    lines = ["| method | images | serial img/s | Ray 1 worker img/s | Ray 2 workers img/s | 2 workers / serial "
             "| overhead per image (1 worker − serial) |", "|---|---|---|---|---|---|---|"]
    for method, n in runs:
        p = params.get(method, {})
        torch.set_num_threads(args.cpus)
        t = time.perf_counter()
        evaluate(clf, ds, method, metrics, tmp / f"{method}_serial.jsonl", p, limit=n)
        serial = time.perf_counter() - t
        times = {}
        for workers in (1, 2):
            t = time.perf_counter()
            evaluate_ray(clf, ds, method, metrics, tmp / f"{method}_ray{workers}.jsonl", p, limit=n, model=args.model,
                         device="cpu", workers=workers, cpus_per_worker=args.cpus / workers)
            times[workers] = time.perf_counter() - t
            print(f"{method}: serial {serial:.1f} s, Ray {workers} worker(s) {times[workers]:.1f} s", file=sys.stderr)
        label = method + (" (" + ", ".join(f"{k}={v}" for k, v in p.items()) + ")" if p else "")
        lines.append(f"| {label} | {n} | {n / serial:.2f} | {n / times[1]:.2f} | {n / times[2]:.2f} | "
                     f"{serial / times[2]:.2f}× | {(times[1] - serial) / n * 1000:+.0f} ms |")
    print(f"shapes test images, {args.model} on the CPU ({args.cpus} cores), metric {args.metric}; "
          f"local Ray start {ray_start:.1f} s (not in the rates), a worker's start {actor_start:.1f} s (in them)\n")
    print("\n".join(lines))
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
