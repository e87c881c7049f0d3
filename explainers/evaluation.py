"""Evaluating a method on a dataset: ``python -m explainers evaluate ...``.

Each image is an independent task (:func:`evaluate_item`): explain it, then score the map with
every requested metric (each metric's perturbed images go through the classifier in batches).
Results are appended to a JSON-lines file as they come, one line per image after a header line
with the settings, so an interrupted run loses nothing and a re-run with the same settings skips
what is done (a different setting is refused rather than mixed in). :func:`summarise` gives the
mean and a 95% confidence interval (Student t) per metric.

Fanning out: the per-image task takes only plain values (index, item, method, params), so
:mod:`explainers.evaluation_ray` runs it on Ray actors (one per GPU or CPU share, each holding
the classifier) and appends their rows to the same file through :func:`plan` /
:func:`append_row`; the index column makes the merge and the resumption order-free.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np

from . import metrics as M
from .core import explain, get_method
from .errors import ExplainerError
from .progress import report

FORMAT = 1


@dataclass
class Context:
    """What a metric may need beyond the map: the method, its params, the map's name, and a
    per-run cache (e.g. the randomised classifier of the sanity metric, built once)."""

    method: str
    params: dict
    map_name: str
    seed: int = 0
    cache: dict = field(default_factory=dict)
    region: Optional[np.ndarray] = None  # the current image's object mask at the map's size (None: unknown)


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[..., float]  # (clf, x01 (1, 3, H, W), saliency (H, W), target, item, ctx) -> float
    needs_region: bool = False
    lower_is_better: bool = False
    help: str = ""


def object_mask(clf, image, mask=None, box=None) -> Optional[np.ndarray]:
    """The object's region (a bool mask or a box at the image's size) as a bool mask at the
    classifier's input size, transformed exactly as ``clf.pixels`` transforms the image (resize,
    centre crop). None when neither is known."""
    from PIL import Image

    if mask is None and box is None:
        return None
    w, h = image.size
    m = np.asarray(mask, dtype=bool) if mask is not None else M.box_mask((h, w), box)
    if m.shape == tuple(clf.input_size) and (w, h) == tuple(clf.input_size[::-1]):
        return m
    if m.shape != (h, w):
        raise ExplainerError(f"the object mask is {m.shape}, the image {(h, w)}")
    return clf.pixels(Image.fromarray(m.astype(np.uint8) * 255).convert("RGB"))[0].numpy() > 0.5


def _target_for(clf, dataset, item, target: str) -> Optional[int]:
    """The class to explain: the item's true class in the classifier's labels (matched by name when
    the dataset's classes are not the classifier's), or None (= the predicted class)."""
    if target != "label" or item.label is None:
        return None
    classes = list(getattr(dataset, "classes", []) or [])
    if not classes or classes == list(clf.labels):
        return int(item.label) if 0 <= item.label < clf.num_classes else None
    try:
        return clf.label_index(classes[item.label])
    except (ExplainerError, IndexError):
        return None


def _sanity(clf, x, s, t, ctx: Context) -> dict:
    """The map against the fully randomised network's and against a second run on the unchanged
    network, both made the same way as the map (``explainers.sanity.FullRandomisation``: a fitted
    part in use is refitted on each network), computed once per image for both metrics."""
    from .sanity import FullRandomisation

    key = ("sanity", clf.id, ctx.method, ctx.seed)
    if key not in ctx.cache:
        for v in ctx.cache.values():
            if hasattr(v, "close"):
                v.close()
        ctx.cache.clear()  # one classifier per run
        ctx.cache[key] = FullRandomisation(clf, ctx.method, ctx.map_name, ctx.params, ctx.seed)
    return ctx.cache[key].compare(x[0], t, s)


def _label_spearman(clf, x, s, t, item, ctx: Context) -> float:
    from .sanity import similarity

    order = clf.probabilities(x)[0].argsort(descending=True).tolist()
    other = next(c for c in order if c != t)
    r = explain(clf, x[0].cpu(), ctx.method, target=other, **ctx.params).maps[ctx.map_name]
    return similarity(s, r)["spearman"]


METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric("pointing", lambda clf, x, s, t, it, c: float(M.pointing_game(s, c.region)), needs_region=True,
               help="pointing game: the map's maximum inside the object (1 = hit)"),
        Metric("deletion", lambda clf, x, s, t, it, c: M.deletion_auc(clf, x, s, t), lower_is_better=True,
               help="deletion AUC (RISE; black baseline, 32 steps)"),
        Metric("insertion", lambda clf, x, s, t, it, c: M.insertion_auc(clf, x, s, t),
               help="insertion AUC (RISE; blurred baseline, 32 steps)"),
        Metric("m-f", lambda clf, x, s, t, it, c: M.m_f(clf, x, s, t), help="M_F in % (paper 003, Eq. 8)"),
        Metric("m-i", lambda clf, x, s, t, it, c: M.m_i(s, c.region), needs_region=True, help="M_I in % (paper 003, Eq. 9)"),
        Metric("bbox-accuracy", lambda clf, x, s, t, it, c: M.bbox_accuracy(s, c.region), needs_region=True,
               help="top-n pixels inside the object of n pixels (paper 004, Sec. 6.3)"),
        Metric("kl", lambda clf, x, s, t, it, c: M.kl_auc(clf, x, s), lower_is_better=True,
               help="mean KL when the least-salient 10…90% are zeroed (paper 002, Sec. 4.4)"),
        Metric("sanity", lambda clf, x, s, t, it, c: _sanity(clf, x, s, t, c)["spearman"], lower_is_better=True,
               help="Spearman of the map vs the map of the fully randomised model, made the same way (Adebayo et al.)"),
        Metric("sanity-reference", lambda clf, x, s, t, it, c: _sanity(clf, x, s, t, c)["reference"],
               help="Spearman of the map vs a second run on the unchanged model made the same way (another seed or "
                    "fit): the method's own noise, to read the sanity figure against"),
        Metric("label-sensitivity", _label_spearman, lower_is_better=True,
               help="Spearman of the map vs the map for the runner-up class"),
    ]
}
DEFAULT_METRICS = ("pointing", "deletion", "insertion", "m-f", "m-i", "bbox-accuracy", "kl")


def parse_metrics(text: str | Iterable[str]) -> list[str]:
    """``"pointing,deletion"`` or a list; ``all`` stands for every metric but the slower
    sanity / label-sensitivity ones (``all,sanity`` adds one)."""
    names = [m.strip() for m in text.split(",")] if isinstance(text, str) else [str(m).strip() for m in text]
    names = [x for m in names if m for x in (DEFAULT_METRICS if m == "all" else [m])]
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise ExplainerError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(METRICS)} or all")
    return list(dict.fromkeys(names))


def primary_map(method: str, name: Optional[str] = None) -> str:
    spec = get_method(method)
    if name is None:
        return next(iter(spec.maps))
    if name not in spec.maps:
        raise ExplainerError(f"method {method} has no map {name!r}; it has {', '.join(spec.maps)}")
    return name


def evaluate_item(clf, item, index: int, method: str, metrics: list[str], params: dict, map_name: str,
                  target: str = "label", ctx: Optional[Context] = None, dataset=None) -> dict:
    """One image (the independent task): explain the true class (``target="label"``, when the
    classifier has it) or the predicted one, then score the map with each metric. Returns a
    plain row: index, target, seconds, one value per metric (None where the image has no box)."""
    ctx = ctx or Context(method, dict(params), map_name)
    x01 = clf.pixels(item.image).unsqueeze(0).to(clf.device)
    t_arg = _target_for(clf, dataset, item, target)
    ctx.region = object_mask(clf, item.image, item.mask, item.box) if any(METRICS[m].needs_region for m in metrics) else None
    t0 = time.perf_counter()
    result = explain(clf, x01[0].cpu(), method, target=t_arg, **params)
    sal = result.maps[map_name]
    t = int(result.meta["target"])
    row: dict[str, Any] = {"index": int(index), "target": t, "label": None if item.label is None else int(item.label)}
    for name in metrics:
        m = METRICS[name]
        if m.needs_region and ctx.region is None:
            row[name] = None
            continue
        v = float(m.fn(clf, x01, sal, t, item, ctx))
        row[name] = None if math.isnan(v) else v
    row["seconds"] = round(time.perf_counter() - t0, 4)
    return row


SANITY_VERSION = 2  # 2: maps made the same way on both networks (refits), with the reference (issue 19)


def header(clf, dataset, method: str, metrics: list[str], params: dict, map_name: str, target: str, seed: int) -> dict:
    h = {
        "format": FORMAT, "model": clf.id, "data": getattr(dataset, "name", "?"), "split": getattr(dataset, "split", "?"),
        "method": method, "map": map_name, "params": {k: params[k] for k in sorted(params)}, "metrics": metrics,
        "target": target, "seed": seed,
    }
    if any(m.startswith("sanity") for m in metrics):  # rows of an older figure or other fits are not mixed in
        from .sanity import NETWORK_FITS, needs_network_fit

        h["sanity"] = SANITY_VERSION
        if needs_network_fit(method, params):
            f = NETWORK_FITS[method]
            h["sanity_fit"] = {"samples": f.samples, **{k: f.short[k] for k in sorted(f.short)}}
    return h


def read_results(path: Path) -> tuple[Optional[dict], dict[int, dict]]:
    """The header and the rows by index of a results file; lines cut by an interruption are dropped."""
    head, rows = None, {}
    if not path.exists():
        return head, rows
    for line in path.read_text().splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "header" in obj:
            head = head or obj["header"]
        elif isinstance(obj, dict) and "index" in obj:
            rows[int(obj["index"])] = obj
    return head, rows


def done_indices(path: Path) -> set[int]:
    return set(read_results(path)[1])


def _repair(path: Path, head: Optional[dict], rows: dict[int, dict]) -> None:
    """Rewrite the file with only its complete lines when its tail was cut (atomic replace)."""
    text = path.read_text()
    if not text or text.endswith("\n"):
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as f:
        if head is not None:
            f.write(json.dumps({"header": head}) + "\n")
        for i in sorted(rows):
            f.write(json.dumps(rows[i]) + "\n")
    os.replace(tmp, path)


@dataclass
class Plan:
    """A run's checked settings and what its results file already holds (shared by the serial run
    and :mod:`explainers.evaluation_ray`, so either resumes the other's file)."""

    metrics: list[str]
    params: dict
    map_name: str
    n: int
    out: Path
    header: dict
    rows: dict[int, dict]
    fresh: bool  # no header on disk yet


def plan(clf, dataset, method: str, metrics: Iterable[str], out: Path, params: Optional[dict] = None,
         map_name: Optional[str] = None, limit: Optional[int] = None, target: str = "label", seed: int = 0) -> Plan:
    """Check the settings (bad ones fail before any work), read the rows already in ``out`` and
    repair a tail cut by an interruption; refuse a file made with other settings."""
    metrics = parse_metrics(metrics)
    get_method(method)
    map_name = primary_map(method, map_name)
    if target not in ("label", "predicted"):
        raise ExplainerError(f"target must be 'label' or 'predicted', got {target!r}")
    params = dict(params or {})
    from .core import make_config

    cfg = make_config(method, **params)  # bad parameters fail before any work
    params = {k: getattr(cfg, k) for k in params}  # "16" from the command line and 16 from Python alike
    if limit is not None and int(limit) < 0:
        raise ExplainerError(f"limit must be >= 0, got {limit}")
    n = len(dataset) if limit is None else min(int(limit), len(dataset))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    want = header(clf, dataset, method, metrics, params, map_name, target, seed)
    head, rows = read_results(out)
    if head is not None and json.loads(json.dumps(want)) != head:
        diff = sorted(k for k in want if head.get(k) != json.loads(json.dumps(want))[k])
        raise ExplainerError(f"{out} holds results made with other settings ({', '.join(diff)}); give another --out or delete it")
    if out.exists():
        _repair(out, head, rows)
    return Plan(metrics, params, map_name, n, out, want, rows, head is None)


def open_results(p: Plan):
    """``p.out`` opened for appending, with the header written first when the file is new."""
    f = p.out.open("a")
    if p.fresh:
        f.write(json.dumps({"header": p.header}) + "\n")
        f.flush()
        p.fresh = False
    return f


def append_row(f, p: Plan, row: dict) -> bool:
    """Write one row (flushed and synced: a stop loses nothing finished) unless its index is
    already there; False for a duplicate, which is dropped (a row is never written twice)."""
    i = int(row["index"])
    if i in p.rows:
        return False
    f.write(json.dumps(row) + "\n")
    f.flush()
    os.fsync(f.fileno())
    p.rows[i] = row
    return True


def evaluate(
    clf,
    dataset,
    method: str,
    metrics: Iterable[str],
    out: Path,
    params: Optional[dict] = None,
    map_name: Optional[str] = None,
    limit: Optional[int] = None,
    progress: Optional[Callable] = None,
    target: str = "label",
    seed: int = 0,
) -> list[dict]:
    """Run (or resume) an evaluation, appending one JSON line per image to ``out``; returns the
    rows of the first ``limit`` images in index order. Raise ``Cancelled`` from ``progress`` to
    stop: every finished image is already on disk."""
    p = plan(clf, dataset, method, metrics, out, params, map_name, limit, target, seed)
    n, rows = p.n, p.rows
    ctx = Context(method, p.params, p.map_name, seed)
    with open_results(p) as f:
        done = sum(1 for i in rows if i < n)
        report(progress, done, n, "resumed" if rows else method)
        for i in range(n):
            if i in rows:
                continue
            row = evaluate_item(clf, dataset[i], i, method, p.metrics, p.params, p.map_name, target, ctx, dataset)
            append_row(f, p, row)
            done += 1
            report(progress, done, n, method)
    return [rows[i] for i in sorted(rows) if i < n]


def summarise(rows: list[dict], metrics: Iterable[str]) -> dict[str, dict]:
    """Mean, standard deviation, count and 95% confidence interval (Student t) per metric."""
    from scipy import stats

    out = {}
    for name in metrics:
        vals = np.array([r[name] for r in rows if r.get(name) is not None and not math.isnan(r[name])], dtype=float)
        if vals.size == 0:
            out[name] = {"mean": None, "std": None, "n": 0, "ci95": [None, None]}
            continue
        mean = float(vals.mean())
        sd = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
        half = float(stats.t.ppf(0.975, vals.size - 1) * sd / math.sqrt(vals.size)) if vals.size > 1 else 0.0
        out[name] = {"mean": mean, "std": sd, "n": int(vals.size), "ci95": [mean - half, mean + half]}
    return out


def summary_table(summaries: dict[str, dict[str, dict]], metrics: list[str], digits: int = 3) -> str:
    """A markdown table: one row per method (``summaries[method][metric]``), mean ± CI half-width."""
    arrows = {m: (" ↓" if METRICS[m].lower_is_better else " ↑") for m in metrics}
    lines = ["| method | " + " | ".join(f"{m}{arrows[m]}" for m in metrics) + " | n |", "|---" * (len(metrics) + 2) + "|"]
    for method, summ in summaries.items():
        cells = []
        for m in metrics:
            s = summ.get(m, {})
            if not s or not s.get("n"):
                cells.append("n/a")
            else:
                half = (s["ci95"][1] - s["ci95"][0]) / 2
                cells.append(f"{s['mean']:.{digits}f} ± {half:.{digits}f}")
        n = max((s.get("n", 0) for s in summ.values()), default=0)
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {n} |")
    return "\n".join(lines)


def plot_summary(summaries: dict[str, dict[str, dict]], metrics: list[str], path: Path) -> Path:
    """Means with 95% CIs as bar charts, one panel per metric, saved with matplotlib (PNG/SVG/PDF)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    methods = list(summaries)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        means = [summaries[k].get(m, {}).get("mean") for k in methods]
        lo = [summaries[k].get(m, {}).get("ci95", [None, None])[0] for k in methods]
        hi = [summaries[k].get(m, {}).get("ci95", [None, None])[1] for k in methods]
        ys = [np.nan if v is None else v for v in means]
        err = [[0 if v is None else v - a for v, a in zip(means, lo)], [0 if v is None else b - v for v, b in zip(means, hi)]]
        ax.bar(range(len(methods)), ys, yerr=err, capsize=3, color="#4c78a8")
        ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{m} ({'lower' if METRICS[m].lower_is_better else 'higher'} is better)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def default_out(clf_id: str, data: str, split: str, method: str) -> Path:
    return Path("runs") / f"eval_{clf_id}_{Path(str(data)).name}_{split}_{method}.jsonl"


__all__ = [
    "Context", "DEFAULT_METRICS", "object_mask", "METRICS", "Metric", "Plan", "append_row", "default_out", "done_indices",
    "evaluate", "evaluate_item", "open_results", "parse_metrics", "plan", "plot_summary", "read_results", "summarise", "summary_table",
]
