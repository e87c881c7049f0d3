"""Speed of MIP-IN: one map once fitted, and the fit for one class.

    .venv/bin/python benchmarks/bench_mipin.py [--model shapes-resnet] [--threads 1] [--repeats 20]
                                               [--no-fit] [--fit-classes 0] [--completeness 200]

Prints, for the chosen model (default: the embedded default):
- the seconds for one map through ``explain(..., "mipin")`` (median of ``--repeats``, after a
  warm-up that loads the fit) and for the bare method (``run``), target: within 50 ms on a 2-core CPU;
- the same after a λ change (the dense inverses re-solved from the stored statistics, first call
  and cached);
- the fit of ``--fit-classes`` (default one class) on the model's training split into a temporary
  folder, with the seconds per layer (target: one class of the default within 60 s) and each
  layer's reconstruction R² on the held-out images (the fit card's ``summary``);
- with ``--completeness N``: APC and positive APC (Eq. 10–11) of the committed fit on N test images.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _load(model_id: str, device: str):
    from explainers.classifiers.base import resolve_device

    try:
        from explainers import load_classifier

        return load_classifier(model_id, device=device)
    except ImportError:  # the model zoo module is not in this checkout yet: embedded models only
        from explainers.classifiers.embedded import load_embedded

        return load_embedded(model_id, resolve_device(device))


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--no-fit", action="store_true", help="skip timing the fit")
    ap.add_argument("--fit-classes", default="0", help="classes to fit in the timing (comma separated)")
    ap.add_argument("--fit-limit", type=int, default=None, help="training images for the timed fit (default: all)")
    ap.add_argument("--completeness", type=int, default=0, help="APC on this many test images (0: skip)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from explainers.classifiers import DEFAULT_CLASSIFIER
    from explainers.core import explain, make_config
    from explainers.data import load_dataset
    from explainers.methods import mipin as M

    clf = _load(args.model or DEFAULT_CLASSIFIER, args.device)
    print(f"model {clf.id} on {clf.device}, {torch.get_num_threads()} threads")
    plan = M.get_plan(clf)
    print(f"inverted: {plan.scope} ({', '.join(s.label for s in plan.stages)})")

    fits = M.fitted_paths(clf)
    if fits:
        size = sum(p.stat().st_size for p in fits[-1:])
        print(f"fit {fits[0]} ({size / 1e6:.2f} MB)")
        if clf.dataset:
            arr, _ = load_dataset(clf.dataset, "test", limit=1).arrays(clf.input_size)
            image = torch.from_numpy(arr[0]).permute(2, 0, 1).float().div(255)
        else:
            image = torch.rand(3, *clf.input_size, generator=torch.Generator().manual_seed(0))
        x01 = image.unsqueeze(0).to(clf.device)
        target = int(clf.probabilities(x01)[0].argmax())
        cfg = make_config("mipin")
        explain(clf, image, "mipin", target=target)  # warm-up: loads the fit, builds the plan
        t_explain = median_time(lambda: explain(clf, image, "mipin", target=target), args.repeats)
        t_run = median_time(lambda: M.run(clf, x01, target, cfg), args.repeats)
        print(f"map (explain)        {t_explain * 1e3:8.1f} ms   (median of {args.repeats}; target <= 50 ms)")
        print(f"map (run only)       {t_run * 1e3:8.1f} ms")
        t = time.perf_counter()
        explain(clf, image, "mipin", target=target, lam=0.37)
        first = time.perf_counter() - t
        cached = median_time(lambda: explain(clf, image, "mipin", target=target, lam=0.37), args.repeats)
        print(f"map at a new λ       {first * 1e3:8.1f} ms first (re-solve), {cached * 1e3:.1f} ms cached")
        for n in (1, 16, 64):
            xs = x01.expand(n, -1, -1, -1).contiguous()
            tb = median_time(lambda: M.explain_batch(clf, xs, [target] * n, cfg), max(3, args.repeats // 4))
            print(f"batch of {n:3d}         {tb * 1e3:8.1f} ms   ({tb / n * 1e3:.2f} ms per map)")
        if args.completeness and clf.dataset:
            test = load_dataset(clf.dataset, "test", limit=args.completeness)
            xs, ys = test.arrays(clf.input_size)
            xs = torch.from_numpy(xs).permute(0, 3, 1, 2).float().div(255)
            res = M.completeness(clf, xs, [int(v) for v in ys], cfg)
            print(f"completeness on {len(ys)} test images: APC {res['apc']:.2f}%  positive APC {res['positive_apc']:.2f}%")
    else:
        print(f"no fit for {clf.id}: {M.fit_command(clf)}")

    if not args.no_fit:
        if not clf.dataset:
            print("fit timing skipped: the model has no built-in dataset (give an image folder to the fit command)")
            return
        from explainers.training import mipin as T

        with tempfile.TemporaryDirectory() as tmp:
            opts = {"classes": args.fit_classes}
            if args.fit_limit:
                opts["limit"] = args.fit_limit
            t = time.perf_counter()
            path = T.fit(clf, clf.dataset, out_dir=tmp, **opts)
            total = time.perf_counter() - t
            import json

            card = json.loads(Path(path).with_suffix(".json").read_text())
            n_cls = len(card["classes"])
            print(f"fit {n_cls} class(es) on {card['n_samples']} {card['data']} images: {total:.1f} s "
                  f"({total / n_cls:.1f} s per class; target <= 60 s for one class of the default)")
            for k, s in sorted(card["seconds_per_layer"].items(), key=lambda kv: -int(kv[0])):
                print(f"   layer {k:>2} ({card['plan'][int(k)][0]:7s}) {s:7.2f} s")
            print(f"reconstruction R² per layer (held out: {card['heldout']['from']}, {card['heldout']['n']} images):")
            for line in card.get("summary", []):
                print(f"   {line}")


if __name__ == "__main__":
    main()
