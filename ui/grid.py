"""The comparison grid: every method's maps for one image and class, each cell filled when ready."""
from __future__ import annotations

import dataclasses
import io
import typing
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import streamlit as st

from explainers.core import METHODS, Explanation, get_method
from explainers.errors import ExplainerError
from explainers.viz import grid_png

from . import page, plots, widgets

# The five papers first, then the standard baselines; any other registered method follows, by name.
ORDER = ["pmi-ig", "dssr", "varsal", "dcontrol", "mipin", "occlusion", "integrated-gradients", "gradcam", "rise", "saliency"]


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
    Knob("pmi-ig", "K", "K (PMI patch size)", 2, 16, 1, "side of the marginalised patch, in pixels"),
    Knob("pmi-ig", "N", "N (PMI samples)", 1, 64, 1, "in-fills drawn per patch"),
    Knob("dssr", "lam", "λ (DSSR+ sparsity)", 0.0, 0.02, 0.0005, "empty = the paper's 10/224², scaled to the input size"),
    Knob("dcontrol", "eta", "η (controller)", 0.25, 4.0, 0.05, "steepness of the customised transformer"),
    Knob("dcontrol", "h", "h (controller)", 0.5, 6.0, 0.1, "power of the customised transformer"),
]


def available_methods() -> list[str]:
    """Every registered method: ``ORDER`` first, then the rest by name."""
    get_method("occlusion")  # importing the registry
    return [m for m in ORDER if m in METHODS] + sorted(m for m in METHODS if m not in ORDER)


def knob_values(methods: list[str]) -> dict[str, dict[str, Any]]:
    """Draw the up-front knobs for the methods present; returns per-method parameter overrides."""
    knobs = [k for k in KNOBS if k.method in methods]
    out: dict[str, dict[str, Any]] = {m: {} for m in methods}
    cols = st.columns(max(1, len(knobs)))
    for col, k in zip(cols, knobs):
        config = METHODS[k.method].config
        f = next(f for f in dataclasses.fields(config) if f.name == k.field)
        fallback = {n: v for n, v in (("min", k.lo), ("max", k.hi), ("step", k.step), ("help", k.help)) if v not in (None, "")}
        v = widgets.field_widget(f, typing.get_type_hints(config)[k.field], f"knob.{k.method}.{k.field}", where=col,
                                 label=k.label, fallback=fallback)
        if v is not widgets.SKIP and v != f.default:
            out[k.method][k.field] = v
    return out


def run_cell(model_id: str, device: str, png: bytes, method: str, params: dict, target: Optional[int]) -> Optional[Explanation]:
    """Compute (or fetch) one method's result with its own progress bar; a failure is shown in place."""
    title = METHODS[method].title
    try:
        return page.explain(model_id, device, png, method, params, target, title)
    except ExplainerError as e:
        st.warning(page.failure(e, title), icon=":material/error:")
    except Exception as e:  # noqa: BLE001 - one method's bug must not take down the grid
        st.error(page.failure(e, title))
    return None


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


def draw_maps(result: Explanation, image: np.ndarray, first, flow: Flow) -> None:
    """One figure per map of ``result``: the first in ``first`` (the cell that showed the progress)."""
    spec = METHODS[result.meta["method"]]
    for k, (name, arr) in enumerate(result.maps.items()):
        col = first if k == 0 else flow.next()
        kind, unit = spec.maps.get(name, "positive"), spec.units.get(name, "")
        title = f"{spec.title.split(' (')[0]} · {name}" if len(result.maps) > 1 else spec.title
        col.plotly_chart(plots.map_figure(image, arr, kind, unit, title, height=260), width="stretch", key=f"fig.{result.meta['method']}.{name}")
        cached = " · cached" if result.meta.get("cached") else ""
        col.caption(f"{unit} · range {arr.min():.3g} … {arr.max():.3g} · {result.meta['seconds']:.2f} s{cached}")


def export_png(image: np.ndarray, results: list[Explanation]) -> bytes:
    """The grid as one PNG: every map over the image with its title, unit and colour bar."""
    panels = [
        (f"{r.meta['method']} · {k}", v, METHODS[r.meta["method"]].maps[k], METHODS[r.meta["method"]].units[k])
        for r in results for k, v in r.maps.items()
    ]
    return grid_png(image, panels)


def export_npz(results: list[Explanation]) -> bytes:
    """All maps with their settings, the format of ``explain --out`` (``Explanation.load`` reads it)."""
    buf = io.BytesIO()
    Explanation.combine(results).save(buf)
    return buf.getvalue()
