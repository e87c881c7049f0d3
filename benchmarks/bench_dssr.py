"""DSSR+ speed on the embedded default, against a bare forward + backward pass.

    .venv/bin/python benchmarks/bench_dssr.py [--model shapes-resnet] [--threads 2] [--repeats 3]
                                              [--variant dssr+] [--iterations 300] [--bare-repeat 300]

Prints, for the chosen model with the default config (DSSR+, 300 Adam iterations, noise reference):
the seconds per iteration of ``explain(..., "dssr")``, the seconds of one bare forward + backward
pass of a batch of two images w.r.t. the input (what one iteration must do: the preserved and the
deleted image in one batch), their ratio (target <= 1.2), and the total seconds of the run
(target <= 10 s on a 2-core CPU). The bare pass runs on a deep copy of the network, so the shared
model is never touched. Both are means over a block (the run's 300 iterations, 300 bare passes),
best of ``--repeats`` interleaved rounds (the machine is shared; wall and process CPU time are both
printed: on a busy machine the CPU time is the steadier figure). With 2 threads on a loaded 2-core
machine OpenMP threads wait for each other and everything slows several-fold: use ``--threads 1``
there.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="classifier id (default: the embedded default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="full runs (best of)")
    ap.add_argument("--bare-repeat", type=int, default=300, help="bare passes per timed block (mean)")
    ap.add_argument("--variant", default="dssr+")
    ap.add_argument("--iterations", type=int, default=None, help="default: the config's (300)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from explainers import explain, load_classifier
    from explainers.classifiers import DEFAULT_CLASSIFIER
    from explainers.data import load_dataset
    from explainers.methods.dssr import DSSRConfig

    clf = load_classifier(args.model or DEFAULT_CLASSIFIER, device=args.device)
    image = load_dataset(clf.dataset or "shapes", "test", limit=1)[0].image
    params = {"variant": args.variant}
    if args.iterations:
        params["iterations"] = args.iterations
    iterations = params.get("iterations", DSSRConfig().iterations)
    sync = torch.cuda.synchronize if clf.device.type == "cuda" else (lambda: None)

    # the bare pass: forward + backward of a batch of two w.r.t. the input, on a copy of the net
    net = copy.deepcopy(clf.net)
    x01 = clf.pixels(image).unsqueeze(0).to(clf.device)
    pair = torch.cat([x01, x01.flip(-1)])

    def bare(inp=pair) -> None:
        x = inp.clone().requires_grad_(True)
        p = torch.softmax(net(clf.normalize(x)), dim=1)[:, 0]
        p.sum().backward()

    def bare_timed(clock, inp=pair) -> float:
        """Mean over a block of ``--bare-repeat`` passes, like the run's mean over its iterations
        (a median of single passes would leave out the waits a block of 300 iterations pays)."""
        for _ in range(5):
            bare(inp)  # warm-up
        sync()
        t = clock()
        for _ in range(args.bare_repeat):
            bare(inp)
        sync()
        return (clock() - t) / args.bare_repeat

    warm = explain(clf, image, "dssr", **params)  # warm-up; its final (preserved, deleted) pair:
    seen = torch.from_numpy(np.stack([warm.extras["preserved_image"], warm.extras["deleted_image"]]))
    seen = (seen.permute(0, 3, 1, 2).float() / 255).to(clf.device)
    best_wall = run_wall = run_cpu = float("inf")
    bare_wall = bare_cpu = seen_wall = float("inf")
    r = None
    for _ in range(args.repeats):  # interleaved rounds, best of each
        t, c = time.perf_counter(), time.process_time()
        r = explain(clf, image, "dssr", **params)
        sync()
        run_wall, run_cpu = min(run_wall, time.perf_counter() - t), min(run_cpu, time.process_time() - c)
        best_wall = min(best_wall, r.meta["seconds"])  # the method's own loop (no preprocessing)
        bare_wall = min(bare_wall, bare_timed(time.perf_counter))
        bare_cpu = min(bare_cpu, bare_timed(time.process_time))
        seen_wall = min(seen_wall, bare_timed(time.perf_counter, seen))
    done = r.meta["iterations_run"]
    per_it = best_wall / done
    per_it_cpu = run_cpu / done  # whole explain() in CPU time: an upper bound per iteration
    rs = r.meta["resolved"]
    print(f"load average (1 min) {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: wall times on a shared machine include waiting")
    print(f"model {clf.id} on {clf.device} ({torch.get_num_threads()} threads), input {clf.input_size}, variant {args.variant}, "
          f"{done} iterations, mask {rs['mask_size'][0]}x{rs['mask_size'][1]}, k1={rs['k1']} p1={rs['p1']} k2={rs['k2']}")
    print(f"per iteration                   {per_it * 1e3:8.2f} ms wall   {per_it_cpu * 1e3:8.2f} ms CPU")
    print(f"bare forward+backward (batch 2) {bare_wall * 1e3:8.2f} ms wall   {bare_cpu * 1e3:8.2f} ms CPU")
    print(f"ratio                           {per_it / bare_wall:8.3f} wall   {per_it_cpu / bare_cpu:8.3f} CPU   (target <= 1.2)")
    # the same pass on the images the method actually feeds (noise in them): the network's own time
    # depends on its input on the CPU, so this is the like-for-like cost of an iteration's model part
    print(f"bare pass on the run's own pair  {seen_wall * 1e3:8.2f} ms wall   ratio {per_it / seen_wall:.3f} wall")
    print(f"total {iterations}-iteration run      {best_wall:8.3f} s wall (method)   {run_wall:.3f} s wall, "
          f"{run_cpu:.3f} s CPU (explain() end to end)   (target <= 10 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
