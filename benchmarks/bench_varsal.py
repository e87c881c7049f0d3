"""VarSal speed: the amortised map (one encoder pass) and the per-image fallback.

    .venv/bin/python benchmarks/bench_varsal.py [--model shapes-resnet] [--threads 1 2] [--repeat 20]

Targets (issue 5, 2-core CPU, the embedded default): amortised mean + std in at most 50 ms per
image; the per-image fallback within 10 s. Times are for ``explainers.explain`` end to end (image
preprocessing and the clean prediction included), median over ``--repeat`` runs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import explainers  # noqa: E402
from explainers.data import load_dataset  # noqa: E402
from explainers.methods import varsal  # noqa: E402


def timed(fn, repeat: int) -> tuple[float, object]:
    """Median wall time over ``repeat`` calls (the CPU time of the process is printed separately)."""
    out, times = None, []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def cpu_timed(fn, repeat: int) -> float:
    t = time.process_time()
    for _ in range(repeat):
        fn()
    return (time.process_time() - t) / repeat


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="shapes-resnet")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--per-image-repeat", type=int, default=3)
    args = ap.parse_args()
    import os

    print(f"load average (1 min) {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: wall times on a shared machine include waiting")
    for threads in args.threads:
        torch.set_num_threads(threads)
        bench(args)
    return 0


def bench(args) -> None:
    clf = explainers.load_classifier(args.model, device="cpu")
    data = clf.dataset or "shapes"
    image = load_dataset(data, "test", limit=1)[0].image
    print(f"model {clf.id}, input {clf.input_size}, torch threads {torch.get_num_threads()}, device {clf.device}")

    path = varsal.fitted_path(clf)
    if path is None:
        print("amortised: no fitted encoder for this model (skipped)")
    else:
        enc, card = varsal.load_encoder(path, clf.device)
        explainers.explain(clf, image, "varsal", mode="amortised")  # warm-up (loads the encoder)
        x = clf.pixels(image).unsqueeze(0)
        with torch.inference_mode():
            t_enc, _ = timed(lambda: enc(x), args.repeat)
        run = lambda: explainers.explain(clf, image, "varsal", mode="amortised", n_samples=0)  # noqa: E731
        t_all, r = timed(run, args.repeat)
        c_all = cpu_timed(run, args.repeat)
        print(
            f"amortised: encoder forward {t_enc * 1e3:.1f} ms, explain() end to end {t_all * 1e3:.1f} ms wall, "
            f"{c_all * 1e3:.1f} ms CPU "
            f"(target <= 50 ms; encoder width {card['config']['encoder']['width']}, "
            f"{sum(p.numel() for p in enc.parameters())} parameters)"
        )
    explainers.explain(clf, image, "varsal", mode="per-image", steps=2)  # warm-up
    run = lambda: explainers.explain(clf, image, "varsal", mode="per-image")  # noqa: E731
    t0 = time.process_time()
    t_pi, r = timed(run, args.per_image_repeat)
    c_pi = (time.process_time() - t0) / args.per_image_repeat
    p = r.meta["params"]
    print(
        f"per-image: {t_pi:.2f} s wall, {c_pi:.2f} s CPU (target <= 10 s; {p['steps']} steps x {p['n_mc']} samples "
        f"on a {r.meta['grid'][0]}x{r.meta['grid'][1]} grid)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
