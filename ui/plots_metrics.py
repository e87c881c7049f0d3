"""Plotly figures for the Faithfulness page: deletion / insertion curves, the metrics table, means
with confidence intervals, the sanity check. (The metric computations live in ``ui.page``.)"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explainers import evaluation, sanity

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"]


# ------------------------------------------------------------------------------------ one image


def metrics_table(results: dict[str, dict]) -> list[dict]:
    """Rows for ``st.dataframe``: one per map, the scalar metrics as columns."""
    rows = []
    for name, r in results.items():
        row = {"map": name}
        row.update({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if not k.endswith("_curve")})
        rows.append(row)
    return rows


def curves_figure(results: dict[str, dict], height: int = 340) -> go.Figure:
    """Deletion (left) and insertion (right) curves of every map, AUCs in the legend."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("deletion: most relevant pixels removed (lower AUC = better)",
                                                        "insertion: most relevant pixels put back (higher AUC = better)"))
    for k, (name, r) in enumerate(results.items()):
        c = PALETTE[k % len(PALETTE)]
        fd, pd = r["deletion_curve"]
        fi, pi = r["insertion_curve"]
        fig.add_trace(go.Scatter(x=fd, y=pd, mode="lines", line=dict(color=c), legendgroup=name,
                                 name=f"{name} · del {r['deletion AUC ↓']:.3f} · ins {r['insertion AUC ↑']:.3f}"), 1, 1)
        fig.add_trace(go.Scatter(x=fi, y=pi, mode="lines", line=dict(color=c), legendgroup=name, showlegend=False), 1, 2)
    fig.update_xaxes(title_text="fraction of pixels", range=[0, 1])
    fig.update_yaxes(title_text="probability of the class", range=[0, 1.02], col=1)
    fig.update_yaxes(range=[0, 1.02], col=2)
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=30, b=0), legend=dict(orientation="h", y=-0.25, font=dict(size=11)))
    fig.update_annotations(font_size=11)
    return fig


# ------------------------------------------------------------------------------------ a dataset


def summary_figure(summary: dict[str, dict], height: int = 260) -> go.Figure:
    """Means with 95% confidence intervals, one panel per metric."""
    names = [m for m, s in summary.items() if s.get("n")]
    fig = make_subplots(rows=1, cols=max(1, len(names)), subplot_titles=[
        f"{m} ({'↓' if evaluation.METRICS[m].lower_is_better else '↑'})" for m in names])
    for k, m in enumerate(names):
        s = summary[m]
        fig.add_trace(go.Bar(x=[m], y=[s["mean"]], marker_color=PALETTE[k % len(PALETTE)], showlegend=False,
                             error_y=dict(type="data", symmetric=False, array=[s["ci95"][1] - s["mean"]], arrayminus=[s["mean"] - s["ci95"][0]]),
                             hovertemplate=f"{m}: %{{y:.3f}} (n = {s['n']})<extra></extra>"), 1, k + 1)
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=30, b=0))
    fig.update_annotations(font_size=11)
    return fig


# ------------------------------------------------------------------------------------ sanity


def sanity_figure(result: sanity.SanityResult, height: int = 420) -> go.Figure:
    """Spearman and SSIM against the original map as the layers are randomised top-down
    (the PMI paper's Fig. 24 c, VarSal's Fig. 4), the reference ρ (a second run on the unchanged
    network made the same way) as a dashed line, with each step's map below."""
    n = len(result.steps)
    fig = make_subplots(rows=2, cols=n, specs=[[{"colspan": n}] + [None] * (n - 1), [{}] * n], row_heights=[0.6, 0.4],
                        vertical_spacing=0.12, horizontal_spacing=0.005)
    x = list(range(n))
    fig.add_trace(go.Scatter(x=x, y=result.spearman, mode="lines+markers", name="Spearman rank correlation"), 1, 1)
    fig.add_trace(go.Scatter(x=x, y=result.ssim, mode="lines+markers", name="SSIM"), 1, 1)
    if np.isfinite(result.reference_spearman):  # the method's own noise: a second run on the unchanged network
        fig.add_trace(go.Scatter(x=[x[0], x[-1]], y=[result.reference_spearman] * 2, mode="lines", line=dict(dash="dash", color="grey"),
                                 name=f"reference ρ = {result.reference_spearman:.2f} (same network, {result.reference_how})"), 1, 1)
    fig.update_xaxes(tickvals=x, ticktext=["original"] + [f"+{s}" for s in result.steps[1:]], tickangle=-30, row=1, col=1)
    fig.update_yaxes(title_text="similarity to the original map", range=[-1.05, 1.05], row=1, col=1)
    for k, m in enumerate(result.maps):
        lim = float(np.abs(m).max()) or 1.0
        fig.add_trace(go.Heatmap(z=m, colorscale="RdBu_r", zmin=-lim, zmax=lim, showscale=False, hovertemplate="%{z:.3g}<extra></extra>"), 2, k + 1)
        fig.update_yaxes(autorange="reversed", visible=False, row=2, col=k + 1)
        fig.update_xaxes(visible=False, row=2, col=k + 1)
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=10, b=0), legend=dict(orientation="h", y=1.08))
    return fig
