"""ImageNet-size speed: every method on a torchvision model at 224×224, and the bare forward rate.

    .venv/bin/python benchmarks/bench_imagenet.py [--model resnet50] [--device cpu|cuda] [--threads 2]
        [--methods gradcam,pmi-ig,...] [--paper] [--bf16] [--channels-last] [--forwards-only]

The weights are random (``torchvision_zoo.random_init``; nothing is downloaded): speed, shapes and
memory are those of the real model, the maps mean nothing. Prints

- bare classifier forwards per second (batched, no gradients; with ``--bf16`` under bfloat16
  autocast, with ``--channels-last`` in that memory format), and on CUDA one synchronisation only
  at the end of the timed loop;
- per method, each in a fresh process (so peak RSS is its own): seconds to the first published
  map (an anytime method's first partial map; otherwise the final one), seconds to the final map,
  forwards where the method reports them, and peak RSS (MiB, ``ru_maxrss``, model included);
- PMI's seconds against the same number of bare forwards (the PMI-to-bare-forwards ratio).

The settings are modest ones that finish in minutes on a 2-core CPU (``MODEST``); ``--paper`` uses
each method's defaults instead (PMI: K = 8, N = 8, S = 4, about 24k forwards); ``--sized`` the
settings the app starts with for this input size and device (``explainers.cost.sized_defaults``:
the lighter ones on a CPU at 224 px, the defaults on a GPU), with the per-image methods forced to
optimise (VarSal ``mode=per-image``, the controller ``generator=optimise``: a random network has
no fits).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEST = {
    "gradcam": {},
    "saliency": {},
    "integrated-gradients": dict(steps=16, batch_size=8),
    "occlusion": dict(window=32, stride=16),
    "rise": dict(masks=200, batch_size=25),
    "varsal": dict(mode="per-image", steps=20),
    "dcontrol": dict(generator="optimise", iterations=40, finetune_samples=8),
    "dssr": dict(iterations=40),
    "pmi-ig": dict(K=16, stride=8, N=1, sampler="blur", batch_size=32),
}


PER_IMAGE = {"varsal": dict(mode="per-image"), "dcontrol": dict(generator="optimise")}


def _classifier(model: str, device: str, channels_last: bool = False):
    import torch

    from explainers.classifiers.torchvision_zoo import random_init

    clf = random_init(model, device=device)
    if channels_last:
        clf.net.to(memory_format=torch.channels_last)
    return clf


def forwards_per_second(clf, seconds: float = 10.0, batch: int = 16, bf16: bool = False, channels_last: bool = False) -> float:
    """Bare batched forwards per second, no gradients; one host-device sync at the end only."""
    import torch

    x = torch.rand(batch, 3, *clf.input_size, device=clf.device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ctx = (lambda: torch.autocast(clf.device.type, dtype=torch.bfloat16)) if bf16 else torch.no_grad
    sync = torch.cuda.synchronize if clf.device.type == "cuda" else (lambda: None)
    with torch.no_grad(), ctx():
        clf.logits01(x)  # warm-up
        sync()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or n == 0:
            clf.logits01(x)
            n += batch
        sync()
        return n / (time.perf_counter() - t0)


def one_method(args) -> dict:
    """Run one method (in this process) and return its timings."""
    import torch

    import explainers

    torch.set_num_threads(args.threads)
    t_load = time.perf_counter()
    clf = _classifier(args.model, args.device)
    load_s = time.perf_counter() - t_load
    img = torch.rand(3, 224, 224, generator=torch.Generator().manual_seed(0))
    if args.sized:
        from explainers.cost import sized_defaults

        params = {**PER_IMAGE.get(args.one, {}), **sized_defaults(args.one, tuple(clf.input_size), clf.device)[0]}
    else:
        params = {} if args.paper else MODEST.get(args.one, {})
    params.update(json.loads(args.set_json or "{}"))
    first = {}
    start = time.perf_counter()

    def progress(done, total, message="", partial=None):
        if partial is not None and "t" not in first:
            first["t"] = time.perf_counter() - start
            first["share"] = done / max(total, 1)

    try:
        r = explainers.explain(clf, img, args.one, progress=progress, **params)
    except explainers.ExplainerError as e:
        return {"method": args.one, "error": str(e).split(";")[0][:120], "load_s": load_s}
    final = time.perf_counter() - start
    return {"method": args.one, "params": params, "first_s": first.get("t", final), "first_share": first.get("share", 1.0),
            "final_s": final, "forwards": r.meta.get("forwards"), "load_s": load_s,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    ap.add_argument("--methods", default=",".join([*MODEST, "mipin"]))
    ap.add_argument("--paper", action="store_true", help="each method's defaults instead of the modest settings")
    ap.add_argument("--sized", action="store_true", help="the app's settings for 224 px on this device (cost.sized_defaults)")
    ap.add_argument("--bf16", action="store_true", help="also time bare forwards under bfloat16 autocast")
    ap.add_argument("--channels-last", action="store_true", help="also time bare forwards in channels-last")
    ap.add_argument("--forwards-only", action="store_true", help="only the bare forward rate")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting of the methods run (e.g. with --methods pmi-ig: --set stride=16)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--set-json", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_method(args)))
        return
    import torch

    torch.set_num_threads(args.threads)
    clf = _classifier(args.model, args.device)
    rate = forwards_per_second(clf)
    print(f"{args.model} at 224 on {args.device} ({args.threads} threads): {rate:.2f} forwards/s (float32)")
    if args.bf16:
        print(f"  bfloat16 autocast: {forwards_per_second(clf, bf16=True):.2f} forwards/s")
    if args.channels_last:
        cl = _classifier(args.model, args.device, channels_last=True)
        print(f"  channels-last: {forwards_per_second(cl, channels_last=True):.2f} forwards/s")
    if args.forwards_only:
        return
    del clf
    sets = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        sets[k] = json.loads(v) if v.replace(".", "", 1).lstrip("-").isdigit() or v in ("true", "false") else v
    print("| method | settings | first map (s) | final map (s) | forwards | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|")
    for m in args.methods.split(","):
        cmd = [sys.executable, __file__, "--one", m, "--model", args.model, "--device", args.device,
               "--threads", str(args.threads), "--set-json", json.dumps(sets)] + (["--paper"] if args.paper else []) \
            + (["--sized"] if args.sized else [])
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        try:
            r = json.loads(out.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            print(f"| {m} | failed: {out.stderr.strip().splitlines()[-1:]} | | | | |")
            continue
        if "error" in r:
            print(f"| {m} | refused: {r['error']} | | | | |")
            continue
        settings = " ".join(f"{k}={v}" for k, v in r["params"].items()) or "defaults"
        first = f"{r['first_s']:.1f}" + (f" (partial, {r['first_share']:.0%})" if r["first_share"] < 1 else "")
        print(f"| {m} | {settings} | {first} | {r['final_s']:.1f} | {r['forwards'] or ''} | {r['peak_rss_mib']:.0f} |", flush=True)
        if m == "pmi-ig" and r.get("forwards"):
            print(f"<!-- PMI-to-bare-forwards ratio: {r['final_s'] / (r['forwards'] / rate):.2f} "
                  f"({r['forwards']} forwards, {r['final_s']:.1f} s vs {r['forwards'] / rate:.1f} s bare) -->", flush=True)


if __name__ == "__main__":
    main()
