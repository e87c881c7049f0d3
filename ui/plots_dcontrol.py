"""Plotly figures for the distribution-controller page: Eq. 7's density against the histogram of a
mask's values (the paper's Fig. 2) and the fine-tuning's probability curve (Fig. 3)."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from explainers.methods.dcontrol import controller_density


def density_figure(values: np.ndarray, transformer: str, eta: float, h: float, height: int = 300) -> go.Figure:
    """Histogram (as a density) of the coarse mask's values with the controller's density for
    z ~ N(0, 1): Eq. 7 for the customised transformer, the half-normal for the basic one."""
    v = np.asarray(values, dtype=np.float64).ravel()
    hi = 1.0 if transformer == "customised" else max(3.5, float(v.max()) * 1.05)
    grid = np.linspace(0, hi, 400)[1:-1]
    fig = go.Figure()
    fig.add_trace(go.Histogram(x=v, histnorm="probability density", xbins=dict(start=0, end=hi, size=hi / 40),
                               name="this mask (coarse)", marker_color="#4c78a8", opacity=0.7))
    label = f"Eq. 7 (η = {eta:g}, h = {h:g})" if transformer == "customised" else "half-normal (Eq. 5; + mass ½ at 0)"
    dens = controller_density(grid, eta, h, transformer)
    top = float(np.quantile(dens, 0.98)) * 1.3 if dens.size else 1.0
    fig.add_trace(go.Scatter(x=grid, y=dens, mode="lines", name=label, line=dict(color="#e45756", width=2.5)))
    hist_top = np.histogram(v, bins=40, range=(0, hi), density=True)[0].max() if v.size else 1.0
    fig.update_yaxes(title="density", range=[0, max(top, float(hist_top) * 1.1)])
    fig.update_xaxes(title="relevance score m", range=[0, hi])
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=30, b=0), barmode="overlay",
                      title=dict(text="Distribution of the scores (Fig. 2)", font=dict(size=14)),
                      legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right"))
    return fig


def finetune_figure(fraction: np.ndarray, q: np.ndarray, q_monotone: np.ndarray, label: str, height: int = 300) -> go.Figure:
    """The target's probability with the top fraction of pixels kept (blue) and its monotone
    version (red) used for the extra importance v = q_max − q (Section 3.3, Fig. 3)."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=fraction, y=q, mode="lines+markers", name="q (measured)", line=dict(color="#4c78a8")))
    fig.add_trace(go.Scatter(x=fraction, y=q_monotone, mode="lines", name="q made monotone", line=dict(color="#e45756", dash="dash")))
    fig.update_xaxes(title="fraction of pixels kept (highest scores first)", range=[0, 1])
    fig.update_yaxes(title=f"p({label})", range=[0, 1.02])
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=30, b=0),
                      title=dict(text="Fine-tuning: probability as pixels are kept (Fig. 3)", font=dict(size=14)),
                      legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right"))
    return fig
