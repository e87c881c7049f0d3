"""Plotly figures shared by the pages: maps over the image with their units and raw values on hover,
the top classes, probability curves and bars. Figures only: no widgets, no engine calls."""
from __future__ import annotations

from typing import Optional

import numpy as np
import plotly.graph_objects as go

from explainers.viz import COLORSCALES, value_range


def to_uint8(chw: np.ndarray) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8."""
    return (np.clip(np.asarray(chw).transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)


# Below these largest magnitudes a map is "nearly zero" (drawn muted, with a note): a tenth of what
# a visible effect is in the unit (a hundredth of a bit, half a percent of probability, a 5% mask),
# and for units with no natural scale (gradients, logits, input units) only a map of zeros.
NEAR_ZERO = {"bits": 0.01, "Δ probability": 0.005, "probability": 0.005, "mask value": 0.05, "relevance": 0.05,
             "relevance × probability": 0.005, "prior s.d.": 0.01}
NEAR_ZERO_OTHER = 1e-9
MUTED_OPACITY = 0.25
TITLE_WIDTH = 38  # characters a title line may take before it wraps (plotly titles never wrap)


def peak(arr: np.ndarray) -> float:
    """The largest finite magnitude of a map (0 for an empty or non-finite one)."""
    a = np.asarray(arr, dtype=np.float64)
    finite = np.abs(a[np.isfinite(a)])
    return float(finite.max()) if finite.size else 0.0


def near_zero_floor(unit: str) -> float:
    return NEAR_ZERO.get(unit, NEAR_ZERO_OTHER)


def near_zero(arr: np.ndarray, unit: str) -> str:
    """A note when the map's largest magnitude is below the unit's threshold (``NEAR_ZERO``), else ""."""
    p, floor = peak(arr), near_zero_floor(unit)
    if p >= floor:
        return ""
    return f"nearly zero everywhere: the largest |value| is {p:.2g} {unit}, below {floor:g} {unit} — drawn muted"


def shared_peak(maps: list[np.ndarray]) -> float:
    """One colour scale for maps meant to be compared: their largest magnitude."""
    return max([peak(m) for m in maps] + [1e-12])


def wrap(title: str, width: int = TITLE_WIDTH) -> str:
    """A title broken into lines at " · " (or spaces) so no line is wider than ``width`` characters."""
    words, lines, line = title.replace(" · ", " ·\u00a0").split(" "), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    return "<br>".join(x.replace("\u00a0", " ") for x in lines if x)


def map_figure(
    image: Optional[np.ndarray],
    arr: np.ndarray,
    kind: str,
    unit: str,
    title: str = "",
    opacity: float = 0.65,
    height: int = 320,
    scale: Optional[float] = None,
) -> go.Figure:
    """A heat map of ``arr`` (raw values) over ``image`` (RGB uint8), coloured by the kind's convention.

    ``scale``: a magnitude shared with other maps of the same unit (``shared_peak``): signed maps
    then span ±scale and positive ones 0…scale, so equal colours mean equal values. A map whose
    largest magnitude is below its unit's ``NEAR_ZERO`` threshold is drawn muted (pale, its scale at
    least the threshold) with "nearly zero" in its title.
    """
    lo, hi = value_range(arr, kind)
    floor = near_zero_floor(unit)
    muted = peak(arr) < floor
    least = floor if muted else 0.0  # a muted map keeps its true, pale colours
    if kind == "signed":
        m = max(scale if scale is not None else hi, least)
        lo, hi = -m, m
    elif kind == "positive":
        lo, hi = min(0.0, lo), max(scale if scale is not None else hi, least)
    if muted:
        title = f"{title} · nearly zero" if title else "nearly zero"
    fig = go.Figure()
    if image is not None:
        fig.add_trace(go.Image(z=image, hoverinfo="skip"))
    fig.add_trace(
        go.Heatmap(
            z=np.asarray(arr, dtype=np.float32),
            colorscale=COLORSCALES.get(kind, "Viridis"),
            zmin=lo,
            zmax=hi,
            zmid=0.0 if kind == "signed" else None,
            opacity=MUTED_OPACITY if muted else (opacity if image is not None else 1.0),
            colorbar=dict(title=dict(text=unit, side="right"), thickness=12),
            hovertemplate=f"x=%{{x}}, y=%{{y}}<br>%{{z:.4g}} {unit}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", scaleanchor="x", visible=False)
    fig.update_xaxes(visible=False)
    text = wrap(title)
    lines = text.count("<br>") + 1 if title else 0
    fig.update_layout(title=dict(text=text, font=dict(size=14), x=0, xanchor="left", y=1, yanchor="top", yref="container"),
                      height=height + 18 * max(0, lines - 1), margin=dict(l=0, r=0, t=12 + 20 * lines, b=0))
    return fig


def topk_bar(top: list[tuple[int, str, float]], title: str = "Top classes") -> go.Figure:
    labels = [f"{lab} ({i})" for i, lab, _ in top][::-1]
    probs = [p for _, _, p in top][::-1]
    fig = go.Figure(go.Bar(x=probs, y=labels, orientation="h", text=[f"{p:.1%}" for p in probs], textposition="auto"))
    fig.update_xaxes(range=[0, 1], title="probability")
    fig.update_layout(title=title, height=60 + 36 * len(top), margin=dict(l=0, r=0, t=30, b=0))
    return fig


def curve_figure(x, curves: dict[str, np.ndarray], xtitle: str, ytitle: str, title: str, marker: Optional[float] = None,
                 height: int = 280) -> go.Figure:
    """Up to three probability curves over ``x`` (solid, dashed, dotted), a dotted marker line at ``marker``."""
    fig = go.Figure()
    for (name, y), dash in zip(curves.items(), ("solid", "dash", "dot")):
        fig.add_trace(go.Scatter(x=list(x), y=list(y), mode="lines+markers", name=name, line=dict(dash=dash)))
    if marker is not None:
        fig.add_vline(x=marker, line=dict(color="grey", dash="dot"))
    fig.update_xaxes(title=xtitle)
    fig.update_yaxes(title=ytitle, range=[0, 1.02])
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=30, b=0), title=dict(text=title, font=dict(size=14)),
                      legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right"))
    return fig


def bar_figure(names: list[str], values: list[float], ytitle: str, title: str, height: int = 260) -> go.Figure:
    """One bar per name, its value printed on it."""
    fig = go.Figure(go.Bar(x=names, y=values, text=[f"{v:.3f}" for v in values], textposition="auto"))
    fig.update_yaxes(title=ytitle)
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=30, b=0), title=dict(text=title, font=dict(size=14)))
    return fig
