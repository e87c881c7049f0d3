"""The command line: ``python -m explainers {models,methods,predict,explain,fit,evaluate,sampler-nll,cache} ...``.

``--models DIR`` (on every command that takes ``--model``, and on ``models``) adds a models folder.

Exit code 0 on success; 2 with one line on stderr for bad input (an ``ExplainerError``, a bad
argument); never a traceback for the user's mistakes.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from .errors import Cancelled, ExplainerError


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ExplainerError(f"{self.prog}: {message}")


def _parse_sets(pairs: list[str]) -> dict[str, str]:
    out = {}
    for p in pairs:
        if "=" not in p:
            raise ExplainerError(f"--set expects key=value, got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _use_models(args) -> None:
    """``--models DIR``: that folder's networks first (``$EXPLAINERS_MODELS``, read by ``classifiers.models_folder``)."""
    import os

    from .classifiers.models_folder import ENV

    folder = getattr(args, "models", None)
    if folder:
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise ExplainerError(f"--models {folder}: no such folder")
        os.environ[ENV] = os.pathsep.join(p for p in (str(path), os.environ.get(ENV, "")) if p)


def _load(args):
    from .classifiers import load_classifier

    return load_classifier(args.model, device=args.device, arch=getattr(args, "arch", None))


def cmd_methods(args) -> int:
    from .availability import method_status
    from .cost import forwards_per_second

    clf = _load(args)
    rows = method_status(clf, rates=forwards_per_second(clf))
    if args.json:
        from .availability import as_dicts

        print(json.dumps({"model": clf.id, "methods": as_dicts(rows)}, indent=2))
        return 0
    width = max(len(r.method) for r in rows)
    for r in rows:
        when = f" (about {r.seconds:.1f} s here)" if r.available and r.seconds is not None else ""
        print(f"{r.method:<{width}}  {r.line()}{when}")
    return 0


def cmd_models(args) -> int:
    from .classifiers import list_classifiers

    if args.download:
        from .classifiers import torchvision_zoo

        path = torchvision_zoo.download(args.download)
        print(f"{args.download}: weights at {path}")
        return 0
    rows = list_classifiers()
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
        return 0
    width = max(len(r.id) for r in rows)
    for r in rows:
        status = "available" if r.available else f"unavailable: {r.reason}"
        print(f"{r.id:<{width}}  {r.title}  [{status}]")
    return 0


def cmd_predict(args) -> int:
    from .data.images import load_image

    clf = _load(args)
    if args.topk < 1:
        raise ExplainerError("--topk must be at least 1")
    top = clf.predict(load_image(args.image), topk=args.topk)
    if args.json:
        print(json.dumps({"model": clf.id, "top": [{"index": i, "label": l, "probability": p} for i, l, p in top]}))
    else:
        for i, lab, p in top:
            print(f"{p:8.4f}  {lab} ({i})")
    return 0


def cmd_explain(args) -> int:
    from .core import explain
    from .data.images import load_image
    from .progress import tqdm_progress

    clf = _load(args)
    image = load_image(args.image)
    params = _parse_sets(args.set)
    cb, close = tqdm_progress(args.method)
    try:
        result = explain(clf, image, args.method, target=args.target, progress=cb, **params)
    finally:
        close()
    out = result.save(args.out)
    print(f"{out}: {', '.join(result.maps)} for class {result.meta['target_label']} ({result.meta['seconds']} s)")
    return 0


def cmd_fit(args) -> int:
    from .progress import tqdm_progress
    from .training import get_fitter

    fitter = get_fitter(args.explainer)
    options = _parse_sets(args.set)
    clf = _load(args) if fitter.needs_model else None
    if fitter.needs_model and args.model is None:
        raise ExplainerError(f"fitting {args.explainer} needs --model")
    cb, close = tqdm_progress(f"fit {args.explainer}")
    try:
        path = fitter.fit(clf, args.data, out_dir=args.out, progress=cb, **options)
    finally:
        close()
    print(f"{args.explainer}: fitted, weights at {path}")
    return 0


def cmd_evaluate(args) -> int:
    from .data import load_dataset
    from .evaluation import METRICS, default_out, evaluate, parse_metrics, plot_summary, summarise, summary_table
    from .core import get_method
    from .progress import tqdm_progress

    metrics = parse_metrics(args.metric)
    params = _parse_sets(args.set)
    map_name = params.pop("map", None)
    get_method(args.method)
    ray = getattr(args, "ray", None) is not None
    if ray:  # the driver's copy only names the model in the results' header: the GPUs are the workers'
        from .classifiers import load_classifier

        clf = load_classifier(args.model, device="cpu", arch=args.arch)
    else:
        clf = _load(args)
    ds = load_dataset(args.data, args.split, limit=args.limit)
    split = getattr(ds, "split", args.split)  # what was read (a folder without splits says so)
    out = Path(args.out) if args.out else default_out(clf.id, args.data, split, args.method)
    cb, close = tqdm_progress(f"evaluate {args.method}")
    target, seed = getattr(args, "target", "label") or "label", getattr(args, "seed", 0) or 0
    try:
        if ray:  # Ray is imported only here
            from .evaluation_ray import evaluate_ray

            rows = evaluate_ray(clf, ds, args.method, metrics, out, params, map_name, args.limit, cb, target, seed,
                                model=args.model, arch=args.arch, device=args.device, address=args.ray or None,
                                cpus_per_worker=args.ray_cpus_per_worker, workers=args.ray_workers)
        else:
            rows = evaluate(clf, ds, args.method, metrics, out, params, map_name, args.limit, cb, target=target, seed=seed)
    finally:
        close()
    summary = summarise(rows, metrics)
    plot = getattr(args, "plot", None)
    if plot:
        plot_summary({args.method: summary}, metrics, Path(plot))
    if args.json:
        print(json.dumps({"model": clf.id, "method": args.method, "data": str(args.data), "split": split, "n": len(rows),
                          "results": out.as_posix(), "metrics": summary}))
    else:
        print(f"{args.method} on {args.data}/{split} with {clf.id} ({len(rows)} images, rows in {out})")
        print(summary_table({args.method: summary}, metrics))
        missing = [m for m in metrics if not summary[m]["n"] and METRICS[m].needs_region]
        if missing:
            print(f"({', '.join(missing)}: n/a, the data has no boxes or masks)")
        if plot:
            print(f"plot: {plot}")
    return 0


def cmd_sampler_nll(args) -> int:
    from .classifiers.base import resolve_device
    from .methods.samplers import SAMPLERS
    from .methods.samplers.evaluate import fit_short_side, image_files, load_images, measure
    from .progress import tqdm_progress

    if args.sampler not in SAMPLERS:
        raise ExplainerError(f"unknown sampler {args.sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if not 1 <= args.K <= 32:
        raise ExplainerError(f"--K must be between 1 and 32, got {args.K}")
    if args.limit is not None and args.limit < 1:
        raise ExplainerError("--limit must be at least 1")
    try:
        device = resolve_device(args.device)
    except RuntimeError as e:
        raise ExplainerError(f"--device: {e}") from None
    files = image_files(args.images)[: args.limit]
    images = load_images(files, fit_short_side(args.fit, args.K))
    cb, close = tqdm_progress(f"sampler-nll {args.sampler}")
    try:
        res = measure(images, args.sampler, args.fit, K=args.K, seed=args.seed, device=device, progress=cb,
                      temperature=args.temperature)
    finally:
        close()
    if args.json:
        print(json.dumps(res))
        return 0
    nll = res["bits_per_subpixel"]
    print(f"{args.sampler} ({args.fit}, K = {args.K}) on {len(images)} images, {res['patches']} patches")
    print(f"NLL:       {'none (a deterministic sampler)' if nll is None else f'{nll:.4f} bits per subpixel'}")
    print(f"roughness: {res['roughness']:.2f} grey levels between neighbouring pixels (real patches: {res['real_roughness']:.2f})")
    return 0


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def cmd_cache(args) -> int:
    from . import diskcache

    if args.clear:
        n, freed = diskcache.clear()
        print(f"{diskcache.cache_dir()}: removed {n} entries ({_size(freed)})")
        return 0
    info = diskcache.cache_info()
    print(f"folder:  {info['folder']}")
    print(f"entries: {info['entries']}")
    print(f"size:    {_size(info['bytes'])} ({info['bytes']} bytes)")
    print(f"cap:     {_size(info['max_bytes'])} ({info['max_bytes']} bytes; set {diskcache.MAX_BYTES_ENV} to change it)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m explainers", description="Explain image classifiers.")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def model_args(p, required=True):
        p.add_argument("--model", required=required, help="classifier id (see `models`) or a checkpoint path")
        p.add_argument("--arch", default=None, help="torchvision architecture for a state-dict checkpoint")
        p.add_argument("--device", default="auto", help="auto, cpu or cuda")
        p.add_argument("--models", default=None, metavar="DIR",
                       help="a models folder (NAME.py with build() beside NAME.safetensors, NAME.pt2, ...); "
                            "its networks are ids by file stem")

    p = sub.add_parser("models", help="list the classifiers and whether they are available")
    p.add_argument("--json", action="store_true")
    p.add_argument("--download", metavar="ID", help="download a torchvision model's weights (needs internet)")
    p.add_argument("--models", default=None, metavar="DIR", help="also list the networks of this models folder")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("methods", help="which methods a classifier can run, why not, and which fits it lacks")
    model_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("predict", help="top-k classes for an image")
    model_args(p)
    p.add_argument("--image", required=True)
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("explain", help="compute a method's maps and save them as .npz")
    model_args(p)
    p.add_argument("--image", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--target", default=None, help="class index or label (default: top-1)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a method parameter")
    p.add_argument("--out", required=True, help="output .npz file")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("fit", help="fit an explainer's amortised part on a dataset")
    model_args(p, required=False)
    p.add_argument("--explainer", required=True)
    p.add_argument("--data", required=True, help="built-in dataset name or an image folder")
    p.add_argument("--out", default=None, help="output folder (default: the user cache)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a training option")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("evaluate", help="evaluate a method with a metric on a dataset")
    model_args(p)
    p.add_argument("--method", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--metric", required=True, help="a metric, several joined by commas, or all "
                   "(pointing, deletion, insertion, m-f, m-i, bbox-accuracy, kl; all; sanity, sanity-reference, label-sensitivity)")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a method parameter (map=NAME picks the map)")
    p.add_argument("--target", choices=["label", "predicted"], default="label", help="explain the true class or the top-1")
    p.add_argument("--seed", type=int, default=0, help="seed of the sanity metric's randomisation")
    p.add_argument("--out", default=None, help="results file (JSON lines; resumed when present)")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="also save a plot of the means with 95%% CIs")
    p.add_argument("--json", action="store_true")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on Ray: a local instance sized to this machine, or join ADDRESS (auto, ray://host:port)")
    p.add_argument("--ray-cpus-per-worker", type=float, default=1, metavar="N",
                   help="CPUs per Ray worker where the cluster has no GPU (its torch threads; default 1)")
    p.add_argument("--ray-workers", type=int, default=None, metavar="N", help="at most N Ray workers (default: all that fit)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("sampler-nll", help="a PMI sampler's likelihood and in-fill roughness on a folder of images")
    p.add_argument("--images", required=True, help="folder of images (recursive; *.mask.png skipped)")
    p.add_argument("--fit", required=True, help="the fitted samplers' data: shapes, digits, photos or a fit folder")
    p.add_argument("--sampler", required=True, help="patchsampler, gaussian, noise, mean, blur or constant")
    p.add_argument("--K", type=int, default=8, help="patch side (default 8)")
    p.add_argument("--limit", type=int, default=None, help="at most this many images (sorted by path)")
    p.add_argument("--seed", type=int, default=0, help="seeds the in-fills measured for roughness")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="the PatchSampler's sampling temperature for the roughness (ours; default 1, the model as "
                        "fitted; pmi-ig draws at 0.8); the NLL is always the model's, at 1")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sampler_nll)

    p = sub.add_parser("cache", help="show or clear the disk cache of explanations")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--info", action="store_true", help="the folder, its entries and size, and the cap")
    what.add_argument("--clear", action="store_true", help="remove every cached explanation")
    p.set_defaults(func=cmd_cache)
    return ap


def main(argv: Optional[list[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        _use_models(args)
        return int(args.func(args) or 0)
    except ExplainerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Cancelled:
        print("error: cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # --help
        return int(e.code or 0)


if __name__ == "__main__":
    sys.exit(main())
