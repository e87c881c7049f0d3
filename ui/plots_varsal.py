"""Plotly figures for the VarSal page: the soft-TV prior's covariance pattern and samples from it,
and the std against the mean (what the std carries beyond the mean)."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots


def prior_figure(pic: dict[str, np.ndarray], alpha: float, height: int = 260) -> go.Figure:
    """Σ for a small map (Fig. 9b), one row of Σ as an image (Fig. 9a) and samples from N(0, Σ)."""
    samples = pic["samples"]
    n = len(samples)
    s = int(round(np.sqrt(pic["covariance_small"].shape[0])))
    titles = [f"Σ for a {s}×{s} map", "Σ[centre, ·] (zoomed)"] + [f"prior sample {i + 1}" for i in range(n)]
    fig = make_subplots(rows=1, cols=2 + n, subplot_titles=titles, horizontal_spacing=0.03)
    fig.add_trace(go.Heatmap(z=pic["covariance_small"], colorscale="Blues", zmin=0, zmax=1, showscale=False,
                             hovertemplate="Σ[%{y}, %{x}] = %{z:.3g}<extra></extra>"), 1, 1)
    row = pic["covariance_row"]
    ci, cj = row.shape[0] // 2, row.shape[1] // 2
    crop = row[max(0, ci - 3): ci + 4, max(0, cj - 3): cj + 4]
    fig.add_trace(go.Heatmap(z=crop, colorscale="Blues", zmin=0, zmax=1, showscale=False,
                             text=np.vectorize(lambda v: f"{v:.2g}" if v else "")(crop), texttemplate="%{text}",
                             hovertemplate="%{z:.3g}<extra></extra>"), 1, 2)
    m = float(np.abs(samples).max()) or 1.0
    for i in range(n):
        fig.add_trace(go.Heatmap(z=samples[i], colorscale="RdBu_r", zmin=-m, zmax=m, zmid=0, showscale=(i == n - 1),
                                 colorbar=dict(thickness=10), hovertemplate="%{z:.3g}<extra></extra>"), 1, 3 + i)
    fig.update_yaxes(autorange="reversed", visible=False, scaleanchor=None)
    fig.update_xaxes(visible=False)
    for k in range(1, 3 + n):
        fig.update_yaxes(scaleanchor=f"x{k if k > 1 else ''}", row=1, col=k)
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=30, b=0), title=dict(text=f"soft-TV prior, α = {alpha:g}", font=dict(size=13)))
    fig.update_annotations(font_size=11)
    return fig


def std_vs_mean_figure(mean: np.ndarray, std: np.ndarray, residual: np.ndarray, r2: float, height: int = 320,
                       max_points: int = 3000) -> go.Figure:
    """Every pixel's std against its mean (a seeded subsample of at most ``max_points``), with the
    quadratic fit whose residual is the "std beyond the mean" (fit = std − residual)."""
    m, s, r = (np.asarray(a, dtype=np.float64).ravel() for a in (mean, std, residual))
    idx = np.arange(m.size)
    if m.size > max_points:
        idx = np.sort(np.random.default_rng(0).choice(m.size, max_points, replace=False))
    order = np.argsort(m)
    fig = go.Figure()
    fig.add_trace(go.Scattergl(x=m[idx], y=s[idx], mode="markers", name="pixels", marker=dict(size=3, color="#4c78a8", opacity=0.35),
                               hovertemplate="μ %{x:.3f}, √ν %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=m[order], y=(s - r)[order], mode="lines", name="fit on μ (quadratic)",
                             line=dict(color="#e45756", width=2)))
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=30, b=0),
                      title=dict(text=f"std against mean · R² = {r2:.2f}", font=dict(size=14)),
                      xaxis=dict(title="posterior mean μ"), yaxis=dict(title="posterior std √ν"),
                      legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right"))
    return fig
