"""Plotly figures for the pages: maps over the image with their units and raw values on hover."""
from __future__ import annotations

from typing import Optional

import numpy as np
import plotly.graph_objects as go

from explainers.viz import COLORSCALES, value_range


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
