"""Speed of the distribution controller (paper 003), and its metrics on a few test images.

    .venv/bin/python benchmarks/bench_dcontrol.py [--model shapes-resnet] [--threads 1] [--repeats 20]
                                                  [--transformer customised] [--metrics 0]

Prints, for the chosen model (default: the embedded default), on the CPU with ``--threads``:
- the fitted mask: generator forward + controller + upsampling (median of ``--repeats``),
  target: within 50 ms;
- ``explain(..., "dcontrol")``: fitted mask and fine-tuning (``finetune_samples`` = 64 forwards),
  target: within 2 s;
- ``explain(..., "dcontrol", generator="optimise")``: the per-image fallback (300 Adam steps),
  target: within 10 s;
- with ``--metrics N``: mean M_F (Eq. 8) and M_I (Eq. 9) of the raw and fine-tuned masks on the
  first N images of the model's test split, next to a constant map.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _load(model_id: str, device: str):
    from explainers.classifiers.base import resolve_device

    try:
        from explainers import load_classifier

        return load_classifier(model_id, device=device)
    except ImportError:  # the model zoo module is not in this checkout: embedded models only
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
    ap.add_argument("--model", default="shapes-resnet")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--transformer", default="customised")
    ap.add_argument("--fallback-repeats", type=int, default=2)
    ap.add_argument("--metrics", type=int, default=0, help="M_F and M_I on this many test images (0: skip)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from explainers.core import explain
    from explainers.data import load_dataset
    from explainers.methods import dcontrol as D

    clf = _load(args.model, args.device)
    ds = load_dataset(clf.dataset or "shapes", "test", limit=max(1, args.metrics))
    x_all, y_all = ds.arrays(size=tuple(clf.input_size))
    x01 = torch.from_numpy(x_all).permute(0, 3, 1, 2).float().div(255).to(clf.device)
    x, target = x01[:1], int(y_all[0])
    print(f"{clf.id} on {clf.device}, {torch.get_num_threads()} thread(s), input {clf.input_size}, transformer {args.transformer}")

    paths = D.fit_candidates(clf, args.transformer)
    if paths:
        gen, card = D.load_generator(str(paths[-1].resolve()), str(clf.device))
        D.fitted_mask(gen, clf, x, target, args.transformer, 1.5, 2.5)  # warm-up
        t = median_time(lambda: D.fitted_mask(gen, clf, x, target, args.transformer, 1.5, 2.5), args.repeats)
        print(f"fitted mask (generator + controller + upsampling): {t * 1000:7.1f} ms   (target <= 50 ms)")
        explain(clf, x[0], "dcontrol", target=target, transformer=args.transformer)
        t = median_time(lambda: explain(clf, x[0], "dcontrol", target=target, transformer=args.transformer), max(3, args.repeats // 4))
        print(f"explain: mask + fine-tuned (64 samples):           {t:7.3f} s    (target <= 2 s)")
    else:
        print(f"no fitted {args.transformer} generator for {clf.id}: skipping the amortised timings")
    t = median_time(lambda: explain(clf, x[0], "dcontrol", target=target, transformer=args.transformer, generator="optimise"), args.fallback_repeats)
    print(f"explain: per-image fallback (300 steps) + fine-tune: {t:7.3f} s    (target <= 10 s)")

    if args.metrics:
        from explainers.metrics import m_f, m_i

        boxes = ds.boxes()
        rows = {"mask": ([], []), "mask_finetuned": ([], []), "constant": ([], [])}
        for i in range(min(args.metrics, len(x01))):
            t_i = int(y_all[i])
            res = explain(clf, x01[i], "dcontrol", target=t_i, transformer=args.transformer)
            for name, m in [("mask", res.maps["mask"]), ("mask_finetuned", res.maps["mask_finetuned"]), ("constant", np.zeros(clf.input_size))]:
                rows[name][0].append(m_f(clf, x01[i], m, t_i))
                if boxes is not None:
                    rows[name][1].append(m_i(m, boxes[i]))
        for name, (mf, mi) in rows.items():
            mi_s = f"{np.mean(mi):6.2f}" if mi else "   n/a"
            print(f"{name:>15}: M_F {np.nanmean(mf):6.2f}%   M_I {mi_s}%   ({len(mf)} images)")


if __name__ == "__main__":
    main()
