"""Helpers for the Faithfulness page: cached metric computations (plain-valued keys) and plotly
figures — deletion / insertion curves, means with confidence intervals, the sanity check."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from explainers import evaluation, metrics, sanity

from . import cache

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"]


# ------------------------------------------------------------------------------------ one image


@st.cache_data(max_entries=8, show_spinner=False)
def _sample_regions() -> dict[bytes, tuple]:
    from explainers.data import samples

    return {cache.image_bytes(s.image): (s.mask, s.box) for s in samples() if s.mask is not None or s.box is not None}


def region_for(png: bytes, clf) -> Optional[np.ndarray]:
    """The object's mask (bool, at the classifier's input size, transformed as the image is) when
    the image is a built-in sample with one; None for an uploaded image."""
    region = _sample_regions().get(png)
    if region is None:
        return None
    return evaluation.object_mask(clf, cache.decode_image(png), *region)


@st.cache_data(max_entries=256, show_spinner=False)
def image_metrics(model_id: str, device: str, png: bytes, saliency: np.ndarray, target: int, region: Optional[np.ndarray], steps: int = 32) -> dict:
    """Deletion and insertion curves and every metric of one map on one image."""
    clf = cache.classifier(model_id, device)
    x = clf.pixels(cache.decode_image(png))
    fd, pd = metrics.deletion_curve(clf, x, saliency, target, steps=steps)
    fi, pi = metrics.insertion_curve(clf, x, saliency, target, steps=steps)
    out = {"deletion_curve": (fd, pd), "insertion_curve": (fi, pi), "deletion AUC ↓": metrics.auc(fd, pd),
           "insertion AUC ↑": metrics.auc(fi, pi), "M_F % ↑": metrics.m_f(clf, x, saliency, target),
           "KL (VarSal) ↓": metrics.kl_auc(clf, x, saliency)}
    if region is not None:
        out["pointing game"] = "hit" if metrics.pointing_game(saliency, region) else "miss"
        out["M_I % ↑"] = metrics.m_i(saliency, region)
        out["box accuracy ↑"] = metrics.bbox_accuracy(saliency, region)
    return out


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


def results_path(model_id: str, data: str, method: str, metric_names: list[str], params: dict) -> Path:
    """Where the page keeps a dataset run's rows (resumed by the next click with the same settings)."""
    from explainers.data import cache_dir

    key = hashlib.sha256(repr((model_id, data, method, sorted(metric_names), sorted(params.items()))).encode()).hexdigest()[:12]
    return cache_dir().parent / "runs" / f"{model_id}_{data}_{method}_{key}.jsonl"


def run_dataset(model_id: str, device: str, data: str, method: str, metric_names: list[str], limit: int, params: dict,
                progress: Optional[Callable] = None) -> dict:
    from explainers.data import load_dataset

    clf = cache.classifier(model_id, device)
    ds = load_dataset(data, "test", limit=limit)
    rows = evaluation.evaluate(clf, ds, method, metric_names, results_path(model_id, data, method, metric_names, params),
                               params, limit=limit, progress=progress)
    return evaluation.summarise(rows, metric_names)


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


def run_sanity(model_id: str, device: str, png: bytes, method: str, target: int, seed: int = 0, params: tuple = (),
               progress: Optional[Callable] = None) -> dict:
    """The cascading randomisation and label sensitivity of one method on one image (the page
    keeps the result in its session state). ``progress`` follows the layers."""
    clf = cache.classifier(model_id, device)
    image = cache.decode_image(png)
    r = sanity.cascading_randomisation(clf, image, method, target=target, seed=seed, progress=progress, **dict(params))
    lab = sanity.label_sensitivity(clf, image, method, target=target, **dict(params))
    return {"result": r, "label": {k: v for k, v in lab.items() if k != "maps"}, "label_maps": lab["maps"]}


def sanity_figure(result: sanity.SanityResult, height: int = 420) -> go.Figure:
    """Spearman and SSIM against the original map as the layers are randomised top-down
    (the PMI paper's Fig. 24 c, VarSal's Fig. 4), with each step's map below."""
    n = len(result.steps)
    fig = make_subplots(rows=2, cols=n, specs=[[{"colspan": n}] + [None] * (n - 1), [{}] * n], row_heights=[0.6, 0.4],
                        vertical_spacing=0.12, horizontal_spacing=0.005)
    x = list(range(n))
    fig.add_trace(go.Scatter(x=x, y=result.spearman, mode="lines+markers", name="Spearman rank correlation"), 1, 1)
    fig.add_trace(go.Scatter(x=x, y=result.ssim, mode="lines+markers", name="SSIM"), 1, 1)
    fig.update_xaxes(tickvals=x, ticktext=["original"] + [f"+{s}" for s in result.steps[1:]], tickangle=-30, row=1, col=1)
    fig.update_yaxes(title_text="similarity to the original map", range=[-1.05, 1.05], row=1, col=1)
    for k, m in enumerate(result.maps):
        lim = float(np.abs(m).max()) or 1.0
        fig.add_trace(go.Heatmap(z=m, colorscale="RdBu_r", zmin=-lim, zmax=lim, showscale=False, hovertemplate="%{z:.3g}<extra></extra>"), 2, k + 1)
        fig.update_yaxes(autorange="reversed", visible=False, row=2, col=k + 1)
        fig.update_xaxes(visible=False, row=2, col=k + 1)
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=10, b=0), legend=dict(orientation="h", y=1.08))
    return fig
