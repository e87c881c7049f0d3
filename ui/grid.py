"""The comparison grid: every method's maps for one image and class, each cell filled when ready.

The grid follows the long-work rule of ``ui.work``: every cell shows its method's expected time;
the cached results are drawn first, then the others are computed cheapest first (so the quick maps
appear at once), and a method expected to take more than ``work.LONG_SECONDS`` waits for the
click of its Run button. Maps with the same unit share one symmetric colour scale. PMI computes
every class in one run and VarSal does not depend on the class: both are keyed on the top class,
so the class box never recomputes them.
"""
from __future__ import annotations

import dataclasses
import functools
import io
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import streamlit as st

from explainers.core import METHODS, Explanation, get_method
from explainers.errors import ExplainerError
from explainers.methods.pmi import pmi_map
from explainers.methods.samplers import SAMPLERS, sampler_key
from explainers.viz import grid_png

from . import cache, page, plots, widgets, work

# The five papers first, then the standard baselines; any other registered method follows, by name.
ORDER = ["pmi-ig", "dssr", "varsal", "dcontrol", "mipin", "occlusion", "integrated-gradients", "gradcam", "rise", "saliency"]
CLASS_FREE = {"varsal"}  # maps that do not depend on the class
ALL_CLASSES = {"pmi-ig"}  # one run gives the map of every class (``pmi_map``)


@dataclass(frozen=True)
class Knob:
    """An up-front widget that sets one config field of one method. The default, the range and the
    help come from the field (``explainers.config.knob``); ``lo``/``hi``/``step``/``help`` here are
    used only where the field declares none."""

    method: str
    field: str
    label: str
    lo: Optional[float] = None
    hi: Optional[float] = None
    step: Optional[float] = None
    help: str = ""


KNOBS = [
    Knob("pmi-ig", "K", "K (PMI patch size)"),  # a select box of the fitted K values (widgets.fitted_K)
    Knob("pmi-ig", "N", "N (PMI samples)", 1, 64, 1),
    Knob("dssr", "lam", "λ (DSSR+ sparsity)", 0.0, 0.02, 0.0005),
    Knob("dcontrol", "eta", "η (controller)"),
    Knob("dcontrol", "h", "h (controller)"),
]


def available_methods() -> list[str]:
    """Every registered method: ``ORDER`` first, then the rest by name."""
    get_method("occlusion")  # importing the registry
    return [m for m in ORDER if m in METHODS] + sorted(m for m in METHODS if m not in ORDER)


def method_marks(pc: page.PageContext, methods: list[str]) -> dict:
    """Each method's status for the page's classifier (``explainers.availability``): whether it can
    run, why not and the fix, and which fit it lacks (with the command and its estimated time)."""
    from explainers.availability import method_status

    rates = cache.rates(pc.model_id, pc.device)
    return {s.method: s for s in method_status(pc.clf, methods, rates)}


def mark(method: str, marks: dict) -> str:
    """A method's name in the picker: marked when it cannot run, or runs without a fit it could have."""
    s = marks.get(method)
    if s is None:
        return method
    return f"{method} — unavailable" if not s.available else f"{method} (no fit: slower)" if s.fit else method


def explain_marks(marks: dict, model_id: str) -> None:
    """One line per method: available or not with the reason and the fix, and the fits it lacks."""
    rows = []
    for s in marks.values():
        if not s.available:
            fix = f" **Fix:** {s.fix}" if s.fix and s.fix not in s.reason else ""
            rows.append(f"- :material/block: **{s.method}** unavailable: {s.reason}{fix}")
        elif s.fit:
            rows.append(f"- :material/schedule: **{s.method}** runs without a fit: {s.fit}")
        else:
            rows.append(f"- :material/check: **{s.method}** available")
    st.markdown(f"For **{model_id}**, at each method's default settings:\n" + "\n".join(rows))


def _k_select(clf, where) -> int:
    """PMI's K as a select box of the values the chosen sampler is fitted for (any K for the others)."""
    data = sampler_key(clf)
    sampler = st.session_state.get("compare.pmi-ig.sampler", "patchsampler")
    sampler = sampler if sampler in SAMPLERS else "patchsampler"
    fitted = sampler in widgets.FITTED
    options = [k for k in (widgets.fitted_K(sampler, data) if fitted else widgets.K_ANY) if k <= min(clf.input_size)] or [8]
    more = f"; fit another with `{widgets.fit_command(data)}`" if fitted else ""
    return where.selectbox("K (PMI patch size)", options, format_func=lambda k: f"{k} px",
                           **widgets.kept("knob.pmi-ig.K", 8 if 8 in options else options[-1], lambda v: v in options),
                           help=f"patch side K in pixels (paper: 8); {sampler} on {data} has K = "
                                f"{', '.join(map(str, options))}{more}")


def knob_values(methods: list[str], clf=None, defaults: Optional[dict[str, dict]] = None) -> dict[str, dict[str, Any]]:
    """Draw the up-front knobs for the methods present; returns per-method parameter overrides.
    ``defaults`` ({method: params}, ``widgets.lighter``) start their knobs elsewhere."""
    defaults = defaults or {}
    knobs = [k for k in KNOBS if k.method in methods]
    out: dict[str, dict[str, Any]] = {m: {} for m in methods}
    cols = st.columns(max(1, len(knobs)))
    for col, k in zip(cols, knobs):
        config = METHODS[k.method].config
        f = next(f for f in dataclasses.fields(config) if f.name == k.field)
        if (k.method, k.field) == ("pmi-ig", "K") and clf is not None:
            v = _k_select(clf, col)
        else:
            fallback = {n: v for n, v in (("min", k.lo), ("max", k.hi), ("step", k.step), ("help", k.help)) if v not in (None, "")}
            start = defaults.get(k.method, {}).get(k.field, f.default)
            v = widgets.field_widget(f, typing.get_type_hints(config)[k.field], f"knob.{k.method}.{k.field}", where=col,
                                     label=k.label, fallback=fallback, default=start)
        if v is not widgets.SKIP and v != f.default:
            out[k.method][k.field] = v
    return out


class Flow:
    """Cells of a grid handed out left to right, a new row of ``columns`` when one is full."""

    def __init__(self, columns: int = 4):
        self.columns, self.count, self.row = columns, 0, []

    def next(self):
        if self.count % self.columns == 0:
            self.row = st.columns(self.columns)
        cell = self.row[self.count % self.columns]
        self.count += 1
        return cell


@dataclass
class Cell:
    """One method's place in the grid: a head, a body and a foot per map."""

    method: str
    params: dict
    heads: list = field(default_factory=list)
    bodies: list = field(default_factory=list)
    feet: list = field(default_factory=list)


def units_of(result: Explanation) -> dict[str, str]:
    """The unit of each map as the result states it (MIP-IN's depends on what it inverted)."""
    spec = METHODS[result.meta["method"]]
    return {**spec.units, **(result.meta.get("units") or {})}


def for_class(result: Explanation, target: int, labels: list[str]) -> Explanation:
    """A PMI result keyed on the top class, with its ``pmi`` map (and meta) for ``target`` instead."""
    if result.meta.get("target") == target or "patch_pmi" not in result.extras:
        return result
    maps = {**result.maps, "pmi": pmi_map(result.extras, target)}
    probs = result.extras.get("probs")
    meta = {**result.meta, "target": target, "target_label": labels[target]}
    if probs is not None:
        meta["probability"] = float(np.asarray(probs)[target])
    return Explanation(maps, meta, result.extras)


class Grid:
    """Lays out the cells, draws results as they come, keeps one colour scale per unit."""

    def __init__(self, pc: page.PageContext, columns: int = 4):
        self.pc, self.flow = pc, Flow(columns)
        self.shown: dict[str, list[tuple]] = {}  # unit -> [(body, foot, arr, kind, caption)]
        self.drawn = 0

    def cell(self, method: str, params: dict) -> Cell:
        c = Cell(method, params)
        for _ in METHODS[method].maps:
            col = self.flow.next()
            c.heads.append(col.empty())
            c.bodies.append(col.empty())
            c.feet.append(col.empty())
        return c

    def _draw(self, body, foot, arr, kind, unit, caption, scale) -> None:
        self.drawn += 1  # a fresh key per drawing: a map redrawn on a shared scale is a new element
        body.plotly_chart(plots.map_figure(self.pc.seen, arr, kind, unit, height=260, scale=scale), width="stretch",
                          config={"displayModeBar": False}, key=f"grid.map.{self.drawn}")
        note = plots.near_zero(arr, unit)
        foot.caption(caption + (f"  \n:warning: {note}" if note else ""))

    def draw(self, c: Cell, result: Explanation) -> None:
        spec = METHODS[c.method]
        units, kinds = units_of(result), {**spec.maps, **(result.meta.get("kinds") or {})}  # as the result states them
        for k, (name, arr) in enumerate(result.maps.items()):
            if k >= len(c.bodies):
                break
            unit, kind = units.get(name, ""), kinds.get(name, "positive")
            title = f"{spec.title.split(' (')[0]} · {name}" if len(result.maps) > 1 else spec.title
            c.heads[k].markdown(f"**{title}**")
            cached = " · cached" if result.meta.get("cached") else ""
            caption = f"{unit} · range {np.nanmin(arr):.3g} … {np.nanmax(arr):.3g} · {result.meta['seconds']:.2f} s{cached}"
            group = self.shown.setdefault(unit, [])
            group.append((c.bodies[k], c.feet[k], arr, kind, caption))
            scale = plots.shared_peak([g[2] for g in group]) if kind != "mask" else None
            if len(group) > 1 and kind != "mask":  # one scale per unit: redraw the others on it
                for body, foot, a, kd, cap in group[:-1]:
                    self._draw(body, foot, a, kd, unit, cap + " · scale shared", scale)
                caption += " · scale shared"
            self._draw(c.bodies[k], c.feet[k], arr, kind, unit, caption, scale if len(group) > 1 else None)

    def pending(self, c: Cell, seconds: float, blocked: str) -> None:
        spec = METHODS[c.method]
        c.heads[0].markdown(f"**{spec.title}**")
        # long work says its estimate beside its Run button
        text = "cannot run here" if blocked else (f"about {work.duration(seconds)} · queued" if seconds <= work.LONG_SECONDS else "")
        c.feet[0].caption(text)


def partial_image(method: str, partial: Any) -> None:
    """A running cell's latest partial map (its first map), as a still image: blank (light grey)
    where not final yet. (A still image, not a plotly chart: the cell's final chart replaces it.)"""
    from explainers.viz import colorize

    maps = page.partial_maps(partial)
    if not maps:
        return
    name, arr = next(iter(maps.items()))
    rgb = colorize(arr, METHODS[method].maps.get(name, "signed"))
    rgb[~np.isfinite(arr)] = 235
    st.image(rgb, caption=f"{name} · partial (so far); grey: not final yet", width="stretch")


def run_key_target(method: str, target: int, top1: int) -> int:
    return top1 if method in CLASS_FREE | ALL_CLASSES else target


def render(pc: page.PageContext, methods: list[str], params: dict[str, dict], target: int) -> list[Explanation]:
    """The grid for ``methods``; returns the finished results (for the exports)."""
    top1 = pc.top[0][0]
    grid = Grid(pc)
    cells = [grid.cell(m, params[m]) for m in methods]
    for slot in [s for s in work.jobs() if s.startswith("grid.") and s[5:] not in methods]:
        work.jobs().pop(slot).cancel.set()  # a method taken out of the grid stops
    results: dict[str, Explanation] = {}
    todo = []
    for c in cells:  # first: everything the caches have, at once
        t = run_key_target(c.method, target, top1)
        slot, frozen = f"grid.{c.method}", cache.frozen(c.params)
        try:
            key = cache.request_key(pc.model_id, pc.device, pc.png, c.method, frozen, t)
            job = work.jobs().get(slot)
            if job is not None and job.key != key:  # its inputs changed: stop it
                work.jobs().pop(slot).cancel.set()
                job = None
            hit = None if job is not None and job.state == "running" else cache.lookup(
                pc.model_id, pc.device, pc.png, c.method, frozen, t, key)
        except ExplainerError as e:
            c.bodies[0].warning(page.failure(e, METHODS[c.method].title), icon=":material/error:")
            continue
        if hit is not None:
            results[c.method] = for_class(hit, target, pc.clf.labels)
            grid.draw(c, results[c.method])
            continue
        line, seconds, blocked = page.expected(pc.model_id, pc.device, c.method, c.params)
        grid.pending(c, seconds, blocked)
        if blocked:
            c.bodies[0].warning(page.failure(ExplainerError(blocked), METHODS[c.method].title), icon=":material/block:")
        else:
            todo.append((seconds, c, t))
    for _, c, t in sorted(todo, key=lambda x: x[0]):  # then the rest, cheapest first
        title = METHODS[c.method].title
        with c.bodies[0].container():
            out = page.explanation(pc.model_id, pc.device, pc.png, c.method, c.params, t, title, slot=f"grid.{c.method}",
                                   draw_partial=functools.partial(partial_image, c.method))
        if out.ok:
            results[c.method] = for_class(out.result, target, pc.clf.labels)
            grid.draw(c, results[c.method])
        elif out.state == "failed":
            c.feet[0].empty()
            e = out.error
            box = c.bodies[0].container()
            (box.warning if isinstance(e, ExplainerError) else box.error)(page.failure(e, title), icon=":material/error:")
        elif out.state == "stopped":
            maps = page.partial_maps(out.partial)
            if maps:
                grid.draw(c, Explanation(maps, {"method": c.method, "seconds": 0.0, "target": t, "partial": True}))
    return [results[m] for m in methods if m in results]


# ------------------------------------------------------------------------------------ exports


def about(pc: page.PageContext, target: int, image_name: str = "") -> dict:
    """What made the grid: model, device, image, class (for the exports)."""
    return {"model": pc.model_id, "device": pc.device, "image": image_name or pc.image_name, "target": int(target),
            "class": pc.clf.labels[int(target)]}


def commands(results: list[Explanation], image: str = "IMAGE") -> list[str]:
    """The command lines that reproduce each result (``--image`` the file the image was saved as)."""
    return [c.replace("--image IMAGE", f"--image {image}") for c in Explanation.combine(results).meta["commands"]]


def record(results: list[Explanation], context: Optional[dict] = None) -> dict:
    """The settings of every result and the commands that reproduce them, as embedded in the exports."""
    context = dict(context or {})
    image = context.get("image") or "IMAGE"
    image = image if image.lower().endswith((".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")) else "IMAGE"
    return {**context, "methods": [r.meta["method"] for r in results],
            "settings": {r.meta["method"]: r.meta.get("params", {}) for r in results}, "commands": commands(results, image)}


def export_png(image: np.ndarray, results: list[Explanation], context: Optional[dict] = None) -> bytes:
    """The grid as one PNG: every map over the image with its title, unit and colour bar; the model,
    class, methods, settings and the commands that reproduce them in the PNG's text chunks."""
    from PIL import Image, PngImagePlugin

    panels = [(f"{r.meta['method']} · {k}", v, {**METHODS[r.meta["method"]].maps, **(r.meta.get("kinds") or {})}[k], units_of(r)[k])
              for r in results for k, v in r.maps.items()]
    rec = record(results, context)
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "Explainer explorer (python -m explainers)")
    for k in ("model", "device", "image", "class", "target"):
        if k in rec:
            info.add_text(k, str(rec[k]))
    info.add_text("methods", ", ".join(rec["methods"]))
    info.add_itxt("settings", json.dumps(rec["settings"], default=str))
    info.add_itxt("command", "\n".join(rec["commands"]))
    out = io.BytesIO()
    Image.open(io.BytesIO(grid_png(image, panels))).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def export_npz(results: list[Explanation], context: Optional[dict] = None) -> bytes:
    """All maps with their settings, the format of ``explain --out`` (``Explanation.load`` reads it),
    its ``meta`` also holding the model, class, image and the commands that reproduce each map."""
    combined = Explanation.combine(results)
    rec = record(results, context)
    combined.meta.update({k: v for k, v in rec.items() if k != "settings"})
    buf = io.BytesIO()
    combined.save(buf)
    return buf.getvalue()
