"""Figures for the MIP-IN page: logits of the image and of its source signal, inverted signals."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import plotly.graph_objects as go

from explainers.viz import COLORSCALES, value_range


def logits_bar(labels: Sequence[str], logits_x: np.ndarray, logits_s: np.ndarray, target: int, height: int = 300) -> go.Figure:
    """The logits of the image and of its source signal side by side (the numbers of Fig. 4)."""
    names = [f"{lab} ({i})" + (" ◀" if i == target else "") for i, lab in enumerate(labels)]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=names, y=np.asarray(logits_x, float), name="image X"))
    fig.add_trace(go.Bar(x=names, y=np.asarray(logits_s, float), name="source signal S₀"))
    fig.update_layout(barmode="group", height=height, margin=dict(l=0, r=0, t=30, b=0), title="Logits Φ(X) and Φ(S₀)",
                      legend=dict(orientation="h", y=-0.25))
    fig.update_yaxes(title="logit", zeroline=True)
    return fig


def signal_figure(arr: np.ndarray, title: str, unit: str, height: int = 220, kind: str = "signed") -> go.Figure:
    """One inverted signal: a heat map (channel mean of a feature map) or a bar per neuron (a vector)."""
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 2 and min(arr.shape) > 1:
        lo, hi = value_range(arr, kind)
        fig = go.Figure(go.Heatmap(z=arr, colorscale=COLORSCALES[kind], zmin=lo, zmax=hi, zmid=0.0,
                                   colorbar=dict(thickness=8, title=dict(text=unit, side="right")),
                                   hovertemplate=f"x=%{{x}}, y=%{{y}}<br>%{{z:.4g}} {unit}<extra></extra>"))
        fig.update_yaxes(autorange="reversed", scaleanchor="x", visible=False)
        fig.update_xaxes(visible=False)
    else:
        v = arr.reshape(-1)
        fig = go.Figure(go.Bar(y=v, marker_color=np.where(v >= 0, "#b2182b", "#2166ac"),
                               hovertemplate=f"neuron %{{x}}<br>%{{y:.4g}} {unit}<extra></extra>"))
        fig.update_xaxes(title="neuron")
    fig.update_layout(title=dict(text=title, font=dict(size=12)), height=height, margin=dict(l=0, r=0, t=28, b=0))
    return fig


def display_image(px: np.ndarray) -> np.ndarray:
    """A source signal in pixel space (H, W, 3), any range -> uint8 for display (scaled to its own
    range: the signal is not an image in [0, 1]; only the display is normalised)."""
    a = np.asarray(px, dtype=np.float64)
    lo, hi = float(a.min()), float(a.max())
    if hi - lo < 1e-12:
        return np.zeros(a.shape, np.uint8)
    return ((a - lo) / (hi - lo) * 255).round().astype(np.uint8)


def percent_change(fx: float, fs: float) -> Optional[float]:
    """|Φ(X) − Φ(S)| / |Φ(X)| in percent for one image (the summand of Eq. 10)."""
    return None if fx == 0 else 100.0 * abs(fx - fs) / abs(fx)
