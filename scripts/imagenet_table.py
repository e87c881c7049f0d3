"""The real-network table: each method on the offline colour photographs with a real ImageNet network.

    .venv/bin/python scripts/imagenet_table.py                       # every method, every photograph (hours on 2 cores)
    .venv/bin/python scripts/imagenet_table.py --photos coffee,chelsea --methods occlusion,gradcam,random-square
    .venv/bin/python scripts/imagenet_table.py --methods 'dssr[iterations=100,reference=blur],varsal[negate=1]'
    .venv/bin/python scripts/imagenet_table.py --per-photo --json    # the rows already in the file, as JSON

Photographs: scikit-image's coffee, chelsea, rocket, astronaut and the left view of
stereo_motorcycle, scikit-learn's china and flower (all ship with the packages: no download), each
resized and centre-cropped by the classifier (``clf.pixels``). Each method explains the top-1 class
at the app's defaults (the config defaults) unless a method spec sets a field:
``NAME[key=value,key=value]``; two keys are the script's, not the method's: ``map=NAME`` (which of the
method's maps; default its first) and ``negate=1`` (rank by −map, e.g. 1 − mask).

Columns (``explainers.metrics`` for the curves; σ is the same blur everywhere, ``--sigma``, default
side/16 = 14 px at 224, the metrics' default):

- ``drop``: p(top-1 | x) − p(top-1 | x with the top 10% of the map's pixels replaced by the blurred
  image) — one point of the deletion curve with the blur fill (ties at the cut are blended
  proportionally, as the metrics do). Higher = the map's top pixels matter more;
- ``× occl.``: the mean drop over the mean drop of ``--reference`` (default occlusion) on the same
  photographs, when the file has its rows;
- ``deletion`` / ``insertion``: RISE's AUCs with the blurred image as the fill (``--steps``, default 32);
- ``s / map``: the method's seconds (``explain``'s ``meta["seconds"]``) on this machine;
- ``tied``: the fraction of the image's pixels that share the map's value at the 10% cut (near 0 for
  a continuous map; large = the top 10% is picked among ties, a weaker perturbation).

Controls: ``random`` (a uniformly random map: its top 10% is scattered pixels) and ``random-square``
(a square of 10% of the image at a random place, then growing square rings, for the curves), each
averaged over ``--draws`` seeds.

Every finished (photograph, method) row is appended to the JSON-lines file ``--out`` at once, so a
long run can be stopped and resumed: a row whose key (model, photograph, method spec, σ, steps,
fraction, draws for the controls) is in the file is not computed again. ``--maps DIR`` keeps each
method's map (and its seconds) as ``.npz`` and re-uses it, so the curves can be added later
(``--steps 0`` measures the drop only) without explaining again.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from explainers import explain, get_method, load_classifier  # noqa: E402
from explainers.errors import ExplainerError  # noqa: E402
from explainers.metrics import baseline_image, deletion_auc, insertion_auc, random_map, reveal_masks  # noqa: E402

PHOTOS = ("coffee", "chelsea", "rocket", "astronaut", "stereo_motorcycle", "china", "flower")
CONTROLS = ("random", "random-square")
# PMI at stride 8 (784 patches × N = 8 in-fills, ~6300 forwards, the 437 s per map) instead of
# the app's stride 4 (3025 patches, four times as long); the other methods at the app's defaults
DEFAULT_METHODS = ("pmi-ig[stride=8]", "dssr", "varsal", "dcontrol", "mipin", "occlusion", "integrated-gradients",
                   "gradcam", "rise", "random", "random-square")
SCRIPT_KEYS = ("map", "negate")
FORMAT = 1


# ------------------------------------------------------------------------------------- inputs
def load_photo(name: str) -> Image.Image:
    """One of :data:`PHOTOS` as an RGB PIL image (from the installed packages, no download)."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_images

        data = load_sample_images()
        idx = [Path(f).stem for f in data.filenames].index(name)
        return Image.fromarray(np.asarray(data.images[idx], dtype=np.uint8)).convert("RGB")
    import skimage.data

    if name not in PHOTOS:
        raise ExplainerError(f"unknown photograph {name!r}; known: {', '.join(PHOTOS)}")
    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity)
        img = img[0]
    return Image.fromarray(np.asarray(img, dtype=np.uint8)).convert("RGB")


def split_specs(text: str) -> list[str]:
    """``"a,b[k=1,j=2],c"`` -> ``["a", "b[k=1,j=2]", "c"]`` (commas inside brackets kept)."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return [s for s in out if s]


def parse_spec(spec: str) -> tuple[str, dict, str]:
    """``"dssr[iterations=100, map=mask]"`` -> (method, params as strings, canonical label)."""
    m = re.fullmatch(r"\s*([\w+-]+)\s*(?:\[(.*)\])?\s*", spec)
    if not m:
        raise ExplainerError(f"cannot read the method spec {spec!r}; write NAME or NAME[key=value,...]")
    name, body = m.group(1), m.group(2) or ""
    params: dict[str, str] = {}
    for part in [p.strip() for p in body.split(",") if p.strip()]:
        if "=" not in part:
            raise ExplainerError(f"{spec}: {part!r} is not key=value")
        k, v = (s.strip() for s in part.split("=", 1))
        params[k] = v
    if name not in CONTROLS:
        fields = set(get_method(name).config.__dataclass_fields__)
        clash = fields & set(SCRIPT_KEYS)
        if clash:  # pragma: no cover - no method has them today
            raise ExplainerError(f"{name} has a field named {', '.join(clash)}, which this script reserves")
    label = name + ("[" + ",".join(f"{k}={params[k]}" for k in sorted(params)) + "]" if params else "")
    return name, params, label


# ------------------------------------------------------------------------------------- controls
def random_square_map(shape: tuple[int, int], fraction: float, seed: int) -> np.ndarray:
    """A square of ``fraction`` of the image at a uniformly random place (the map's top), ranked
    below it by the Chebyshev distance from its centre (growing square rings), as a float map."""
    h, w = shape
    side = min(h, w, int(round(math.sqrt(fraction * h * w))))
    rng = np.random.default_rng(seed)
    y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    cy, cx = y0 + (side - 1) / 2.0, x0 + (side - 1) / 2.0
    yy, xx = np.mgrid[0:h, 0:w]
    d = np.maximum(np.abs(yy - cy), np.abs(xx - cx))
    inside = (yy >= y0) & (yy < y0 + side) & (xx >= x0) & (xx < x0 + side)
    return np.where(inside, 1.0 + side, -d).astype(np.float64)  # the whole square ties at the top


def control_maps(name: str, shape: tuple[int, int], fraction: float, seed: int, draws: int) -> list[np.ndarray]:
    if name == "random":
        return [random_map(shape, seed + i) for i in range(draws)]
    return [random_square_map(shape, fraction, seed + i) for i in range(draws)]


# ------------------------------------------------------------------------------------- measures
def top_blur_drop(clf, x01: torch.Tensor, saliency: np.ndarray, target: int, fraction: float = 0.1,
                  sigma: Optional[float] = None, fill: str = "blur") -> tuple[float, float]:
    """``(p, p_blurred)``: the target's probability on the image and with the top ``fraction`` of the
    map's pixels replaced by the blurred image (σ = ``sigma``; None = side/16) — the deletion curve
    with the blur fill at that one fraction (``explainers.metrics.reveal_masks``, ties proportional)."""
    x = x01 if x01.dim() == 4 else x01.unsqueeze(0)
    x = x.to(clf.device)
    top = torch.from_numpy(reveal_masks(saliency, [fraction])).to(x.device, x.dtype).unsqueeze(1)
    ref = baseline_image(x, fill, sigma)  # --fill: blur (default) or a cross-check (mean, grey)
    p = clf.probabilities(torch.cat([x, x * (1 - top) + ref * top]))[:, int(target)]
    return float(p[0]), float(p[1])


def tied_at(saliency: np.ndarray, fraction: float) -> float:
    """The fraction of the pixels whose value equals the map's value at the ``fraction`` cut."""
    flat = np.asarray(saliency, dtype=np.float64).ravel()
    c = int(round(fraction * flat.size))
    if c <= 0 or c >= flat.size:
        return 0.0
    t = np.sort(flat)[::-1][c - 1]
    return float(np.mean(flat == t))


def score_map(clf, x01, saliency, target, fraction, sigma, steps, fill: str = "blur") -> dict:
    p, pb = top_blur_drop(clf, x01, saliency, target, fraction, sigma, fill)
    return {
        "p": p, "p_blurred": pb, "drop": p - pb,
        "deletion": deletion_auc(clf, x01, saliency, target, steps=steps, baseline=fill, blur_sigma=sigma) if steps else None,
        "insertion": insertion_auc(clf, x01, saliency, target, steps=steps, baseline=fill, blur_sigma=sigma) if steps else None,
        "tied": tied_at(saliency, fraction),
    }


# ------------------------------------------------------------------------------------- the file
def row_key(model: str, photo: str, label: str, sigma, steps: int, fraction: float, draws: Optional[int],
            fill: str = "blur") -> str:
    k = {"model": model, "photo": photo, "method": label, "sigma": sigma, "steps": steps, "fraction": fraction}
    if fill != "blur":  # blur rows keep the keys they had before --fill existed
        k["fill"] = fill
    if draws is not None:
        k["draws"] = draws
    return json.dumps(k, sort_keys=True)


def read_rows(path: Path) -> dict[str, dict]:
    """The rows of a JSON-lines file by key; a line cut by an interruption is dropped."""
    rows: dict[str, dict] = {}
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(r, dict) and r.get("format") == FORMAT and "key" in r:
            rows[r["key"]] = r
    return rows


def append_row(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else ""
    with path.open("a") as f:
        if text and not text.endswith("\n"):
            f.write("\n")  # a line cut by an interruption stays on its own (unreadable) line
        f.write(json.dumps(row) + "\n")
        f.flush()


# ------------------------------------------------------------------------------------- one row
def method_map(clf, photo: str, x01: torch.Tensor, spec: str, maps_dir: Optional[Path] = None) -> tuple[np.ndarray, dict]:
    """The map a (non-control) method spec gives on the photograph, read as the spec says (``map=``,
    ``negate=``), and ``{"target", "seconds", "map", "negate", "params", "meta"}``. With ``maps_dir``
    every map of the run is kept there as ``.npz`` and re-used by any later run of the same method
    and parameters (whatever the reading or the curves' settings)."""
    name, params, _ = parse_spec(spec)
    params = dict(params)
    map_name = params.pop("map", None)
    negate = params.pop("negate", "0").lower() in ("1", "true", "yes")
    spec_obj = get_method(name)
    map_name = map_name or next(iter(spec_obj.maps))
    if map_name not in spec_obj.maps:
        raise ExplainerError(f"{name} has no map {map_name!r}; it has {', '.join(spec_obj.maps)}")
    run_label = name + ("[" + ",".join(f"{k}={params[k]}" for k in sorted(params)) + "]" if params else "")
    key = json.dumps({"model": clf.id, "photo": photo, "method": run_label}, sort_keys=True)
    file = maps_dir / f"{photo}_{name}_{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz" if maps_dir else None
    maps = info = None
    if file is not None and file.exists():
        with np.load(file, allow_pickle=False) as z:
            if str(z["key"]) == key:
                maps = {k[2:]: z[k].astype(np.float64) for k in z.files if k.startswith("m_")}
                info = json.loads(str(z["info"]))
    if maps is None:
        res = explain(clf, x01, name, target=None, **params)
        maps = {k: np.asarray(v, dtype=np.float64) for k, v in res.maps.items()}
        keep = ("amortised", "how", "generator", "resolved", "final", "iterations_run", "grid", "final_likelihood",
                "final_loss")
        info = {"target": int(res.meta["target"]), "seconds": float(res.meta["seconds"]), "params": res.meta.get("params"),
                "meta": {k: v for k, v in res.meta.items() if k in keep}}
        if file is not None:
            maps_dir.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(file, key=np.array(key), info=np.array(json.dumps(info, default=str)),
                                **{f"m_{k}": v.astype(np.float32) for k, v in maps.items()})
    sal = -maps[map_name] if negate else maps[map_name]
    return sal, {**info, "map": map_name, "negate": negate}


def run_row(clf, photo: str, x01: torch.Tensor, spec: str, fraction: float, sigma, steps: int, seed: int, draws: int,
            maps_dir: Optional[Path] = None, fill: str = "blur") -> dict:
    """One (photograph, method spec) row: the map(s), then the drop, the curves (``steps`` = 0: none)."""
    name, params, label = parse_spec(spec)
    row: dict[str, Any] = {"format": FORMAT, "model": clf.id, "photo": photo, "method": label, "name": name,
                           "sigma": sigma, "steps": steps, "fraction": fraction, "fill": fill}
    if name in CONTROLS:
        target = int(clf.probabilities(x01.unsqueeze(0))[0].argmax())
        photo_seed = seed + 1000 * PHOTOS.index(photo) if photo in PHOTOS else seed
        maps = control_maps(name, tuple(clf.input_size), fraction, photo_seed, draws)
        scores = [score_map(clf, x01, m, target, fraction, sigma, steps, fill) for m in maps]
        row.update({k: (None if scores[0][k] is None else float(np.mean([s[k] for s in scores]))) for k in scores[0]})
        row.update(target=target, seconds=None, map="control", draws=draws, seed=seed)
    else:
        sal, info = method_map(clf, photo, x01, spec, maps_dir)
        target = info["target"]
        row.update(score_map(clf, x01, sal, target, fraction, sigma, steps, fill))
        row.update(info)
    row["target_label"] = clf.labels[target]
    row["key"] = row_key(clf.id, photo, label, sigma, steps, fraction, draws if name in CONTROLS else None, fill)
    return row


# ------------------------------------------------------------------------------------- tables
COLUMNS = [("drop", "drop, top 10% ↑"), ("ratio", "× ref."), ("deletion", "deletion AUC ↓"),
           ("insertion", "insertion AUC ↑"), ("seconds", "s / map"), ("tied", "tied at the cut")]


def _fmt(v, digits=3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.{digits}f}"


def summarise(rows: list[dict], labels: list[str], photos: list[str], reference: str) -> list[dict]:
    """Mean over the photographs per method spec (and the ratio of its mean drop to the reference's
    mean drop on the same photographs)."""
    by = {(r["method"], r["photo"]): r for r in rows}
    out = []
    for lab in labels:
        rs = [by[(lab, p)] for p in photos if (lab, p) in by]
        if not rs:
            continue
        s = {"method": lab, "n": len(rs), "photos": [r["photo"] for r in rs]}
        for k in ("drop", "deletion", "insertion", "tied", "p"):
            vals = [r[k] for r in rs if r.get(k) is not None]
            s[k] = float(np.mean(vals)) if vals else None
        secs = [r["seconds"] for r in rs if r.get("seconds") is not None]
        s["seconds"] = float(np.mean(secs)) if secs else None
        refs = [by[(reference, r["photo"])]["drop"] for r in rs if (reference, r["photo"]) in by]
        s["ratio"] = s["drop"] / float(np.mean(refs)) if len(refs) == len(rs) and np.mean(refs) > 0 else None
        out.append(s)
    return out


def markdown(summary: list[dict], per_photo: Optional[list[dict]], reference: str, sigma_text: str, steps: int) -> str:
    head = ["method", "n"] + [c.replace("ref.", reference) for _, c in COLUMNS]
    fill = f"blur fill σ = {sigma_text}" if not sigma_text.endswith(" fill") else sigma_text
    lines = [f"Mean over the photographs; top-1 class; {fill}; {steps} steps per curve.\n",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary:
        cells = [s["method"], str(s["n"])] + [_fmt(s.get(k), 1 if k == "seconds" else 2 if k == "ratio" else 3)
                                             for k, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    if per_photo:
        lines += ["", "| photograph | class (p) | method | drop ↑ | deletion ↓ | insertion ↑ | s / map | tied |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in per_photo:
            lines.append(f"| {r['photo']} | {r['target_label']} ({r['p']:.2f}) | {r['method']} | {_fmt(r['drop'])} | "
                         f"{_fmt(r['deletion'])} | {_fmt(r['insertion'])} | {_fmt(r.get('seconds'), 1)} | {_fmt(r['tied'])} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--photos", default=",".join(PHOTOS), help=f"comma list of {', '.join(PHOTOS)}")
    ap.add_argument("--limit", type=int, default=None, help="only the first N photographs")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                    help="comma list of NAME or NAME[key=value,...] (map=, negate=1 are the script's)")
    ap.add_argument("--fraction", type=float, default=0.1, help="the top fraction blurred for the drop (default 0.1)")
    ap.add_argument("--sigma", type=float, default=None, help="blur σ in pixels (default side/16)")
    ap.add_argument("--fill", default="blur", choices=["blur", "mean", "grey"],
                    help="what removed pixels become in the drop and the curves (default blur; mean colour or "
                         "grey to cross-check a method whose own reference is the blur)")
    ap.add_argument("--steps", type=int, default=32, help="steps of the deletion and insertion curves (default 32; 0 = "
                    "no curves, the drop only)")
    ap.add_argument("--draws", type=int, default=3, help="seeds averaged for each control (default 3)")
    ap.add_argument("--seed", type=int, default=0, help="the controls' first seed")
    ap.add_argument("--reference", default="occlusion", help="method spec whose drop the × column divides by")
    ap.add_argument("--out", default="runs/imagenet_table/rows.jsonl", help="JSON-lines file of finished rows")
    ap.add_argument("--maps", default=None, help="folder that keeps each method's map (.npz) and re-uses it later")
    ap.add_argument("--no-run", action="store_true", help="only print the rows already in the file")
    ap.add_argument("--per-photo", action="store_true")
    ap.add_argument("--json", action="store_true", help="print JSON (summary and rows) instead of markdown")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default torch's; 1 on a shared, busy CPU, where more threads thrash)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    photos = [p.strip() for p in args.photos.split(",") if p.strip()]
    bad = [p for p in photos if p not in PHOTOS]
    if bad:
        print(f"error: unknown photograph(s) {', '.join(bad)}; known: {', '.join(PHOTOS)}", file=sys.stderr)
        return 2
    photos = photos[: args.limit] if args.limit else photos
    try:
        specs = split_specs(args.methods)
        labels = [parse_spec(s)[2] for s in specs]
        ref_label = parse_spec(args.reference)[2]
    except ExplainerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    clf = load_classifier(args.model, device=args.device)
    out = Path(args.out)
    rows = read_rows(out)
    notes = []
    for photo in photos if not args.no_run else []:
        x01 = clf.pixels(load_photo(photo))
        for spec, lab in zip(specs, labels):
            name = parse_spec(spec)[0]
            key = row_key(clf.id, photo, lab, args.sigma, args.steps, args.fraction, args.draws if name in CONTROLS else None,
                          args.fill)
            if key in rows:
                continue
            t0 = time.perf_counter()
            try:
                row = run_row(clf, photo, x01, spec, args.fraction, args.sigma, args.steps, args.seed, args.draws,
                              Path(args.maps) if args.maps else None, args.fill)
            except ExplainerError as e:
                notes.append(f"{lab} on {photo}: {e}")
                print(f"{photo} {lab}: {e}", file=sys.stderr)
                continue
            row["wall_seconds"] = round(time.perf_counter() - t0, 2)
            append_row(out, row)
            rows[key] = row
            print(f"{photo} {lab}: drop {row['drop']:.3f}  del {_fmt(row['deletion'])}  ins {_fmt(row['insertion'])}  "
                  f"{row['wall_seconds']:.0f} s", file=sys.stderr, flush=True)
    keep = [r for r in rows.values() if r["model"] == clf.id and r["sigma"] == args.sigma and r["steps"] == args.steps
            and r["fraction"] == args.fraction and r.get("fill", "blur") == args.fill and (r["name"] not in CONTROLS or r.get("draws") == args.draws)]
    summary = summarise(keep, labels, photos, ref_label)
    per_photo = [r for p in photos for lab in labels for r in keep if r["photo"] == p and r["method"] == lab]
    if args.json:
        print(json.dumps({"summary": summary, "rows": per_photo if args.per_photo else None, "notes": notes}, indent=1))
    else:
        sigma_text = f"{args.sigma} px" if args.sigma is not None else f"side/16 = {min(clf.input_size) / 16:g} px"
        if args.fill != "blur":
            sigma_text = f"{args.fill} fill"
        print(markdown(summary, per_photo if args.per_photo else None, ref_label, sigma_text, args.steps))
        for n in notes:
            print(f"\n- {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
