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


def map_figure(
    image: Optional[np.ndarray],
    arr: np.ndarray,
    kind: str,
    unit: str,
    title: str = "",
    opacity: float = 0.65,
    height: int = 320,
) -> go.Figure:
    """A heat map of ``arr`` (raw values) over ``image`` (RGB uint8), coloured by the kind's convention."""
    lo, hi = value_range(arr, kind)
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
            opacity=opacity if image is not None else 1.0,
            colorbar=dict(title=dict(text=unit, side="right"), thickness=12),
            hovertemplate=f"x=%{{x}}, y=%{{y}}<br>%{{z:.4g}} {unit}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", scaleanchor="x", visible=False)
    fig.update_xaxes(visible=False)
    fig.update_layout(title=dict(text=title, font=dict(size=14)), height=height, margin=dict(l=0, r=0, t=30, b=0),
                      # a short mode bar (download and reset only), so it does not cover the title
                      modebar=dict(remove=["zoom", "pan", "select", "lasso", "zoomin", "zoomout", "autoscale"]))
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
