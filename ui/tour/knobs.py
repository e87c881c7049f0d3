"""The tour's knobs step: K and N of PMI, λ of DSSR+, α of VarSal, η and h of the controller, each
shown on the step's image. Slider defaults are the methods' config defaults."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from explainers.methods import softtv
from explainers.methods.dcontrol import DControlConfig, apply_controller, masks_from_z
from explainers.methods.varsal import VarSalConfig

from .. import cache, plots, plots_dcontrol, plots_varsal
from . import common
from .steps import ALPHAS, DSSR, K_SWEEP, KNOBS, LAMBDA_STEPS, N_SWEEP, PMI, VARSAL_PER_IMAGE, Step


def _knob_k(m: str, device: str, png: bytes, img: np.ndarray) -> None:
    cols = st.columns(len(K_SWEEP))
    for col, (K, stride) in zip(cols, K_SWEEP):
        with col:
            res = common.run(m, device, png, "pmi-ig", {"K": K, "stride": stride, "sampler": "blur"}, None, f"PMI, K = {K}")
            common.chart(plots.map_figure(img, res.maps["pmi"], "signed", "bits", f"K = {K} (stride {stride})", height=240), f"tour.k.{K}")
    st.caption("In-fills: blur (the committed PatchSampler is fitted for K = 8 only; blur works at any K).")


def _knob_n(m: str, device: str, png: bytes, img: np.ndarray) -> None:
    maps = {}
    cols = st.columns(len(N_SWEEP))
    for col, N in zip(cols, N_SWEEP):
        with col:
            maps[N] = common.run(m, device, png, "pmi-ig", {**PMI, "N": N}, None, f"PMI, N = {N}").maps["pmi"]
            common.chart(plots.map_figure(img, maps[N], "signed", "bits", f"N = {N}", height=240), f"tour.n.{N}")
    ref = maps[N_SWEEP[-1]]
    st.caption("Pearson ρ to the N = 8 map: " + ", ".join(f"N = {N}: {np.corrcoef(maps[N].ravel(), ref.ravel())[0, 1]:.3f}" for N in N_SWEEP[:-1])
               + " · PatchSampler, K = 8, stride 8.")


def _knob_lambda(m: str, device: str, png: bytes, img: np.ndarray) -> None:
    c1, c2 = st.columns(2)
    scale = c1.select_slider("λ, × the paper's 10/(H·W)", LAMBDA_STEPS, value=1.0, key="tour.dssr.lam", format_func=lambda v: f"{v:g}×",
                        help="λ, the sparsity weight of DSSR+'s loss, as a multiple of the paper's 10/(H·W) (default 1×)")
    two = c2.toggle("two-stage λ (λ × 0.1 while f(preserved) ≤ θ·f(x))", value=True, key="tour.dssr.two")
    h, w = cache.classifier(m, device).input_size
    params = {**DSSR, "lam": scale * 10.0 / (h * w), **({} if two else {"lam_small": 1.0})}
    res = common.run(m, device, png, "dssr", params, None, "DSSR+")
    left, right = st.columns(2)
    with left:
        common.chart(common.map_of(res, "mask", img, f"DSSR+ mask · λ = {scale:g}× 10/(H·W)"), "tour.dssr.mask")
    with right:
        ex = res.extras
        it = np.arange(1, len(ex["lam"]) + 1)
        fig = plots.curve_figure(it, {"f(preserved)": ex["preserved_score"], "f(deleted)": ex["deleted_score"]}, "iteration", "probability", "Scores and λ per iteration")
        lam = np.asarray(ex["lam"], dtype=np.float64)
        fig.add_trace(go.Scatter(x=it, y=lam / max(lam.max(), 1e-12), mode="lines", name="λ (÷ its maximum)", line=dict(color="grey", width=1)))
        common.chart(fig, "tour.dssr.trace")
    fin = res.meta["final"]
    st.caption(f"preserved {fin['preserved']:.1%} · deleted {fin['deleted']:.1%} · mask mean {fin['mask_mean']:.2f} · {len(ex['lam'])} iterations, reference {res.meta['reference']['kind']}.")


def _knob_alpha(m: str, device: str, png: bytes, img: np.ndarray) -> None:
    alpha = st.select_slider("α (prior correlation of neighbours)", ALPHAS, value=VarSalConfig().alpha, key="tour.varsal.alpha",
                         help=f"α, the soft-TV prior's correlation of neighbouring pixels (default {VarSalConfig().alpha:g})")
    res = common.run(m, device, png, "varsal", {**VARSAL_PER_IMAGE, "alpha": alpha}, None, "VarSal, per image")
    left, right = st.columns(2)
    with left:
        common.chart(common.map_of(res, "mean", img, f"posterior mean · α = {alpha:g}"), "tour.varsal.mean")
    with right:
        common.chart(common.map_of(res, "std", img, f"posterior std · α = {alpha:g}"), "tour.varsal.std")
    h, w = cache.classifier(m, device).input_size
    common.chart(plots_varsal.prior_figure(softtv.prior_picture(h, w, alpha, n_samples=3, seed=0), alpha, height=220), "tour.varsal.prior")


def _knob_eta_h(m: str, device: str, png: bytes, img: np.ndarray) -> None:
    res = common.run(m, device, png, "dcontrol", {}, None, "Distribution controller")
    c1, c2 = st.columns(2)
    d = DControlConfig()
    eta = c1.slider("η", 0.5, 2.5, d.eta, 0.5, key="tour.dc.eta")
    h = c2.slider("h", 1.0, 4.0, d.h, 0.5, key="tour.dc.h")
    z = np.asarray(res.extras["z"], dtype=np.float64)
    mask, _ = masks_from_z(z, cache.classifier(m, device).input_size, "customised", eta, h)
    left, right = st.columns(2)
    with left:
        common.chart(plots.map_figure(img, mask, "mask", "relevance", f"mask · η = {eta:g}, h = {h:g}"), "tour.dc.mask")
    with right:
        common.chart(plots_dcontrol.density_figure(apply_controller(z, "customised", eta, h), "customised", eta, h, height=260), "tour.dc.density")
    st.caption("The generator's stored z is re-shaped live (no recompute): the ranking stays, the distribution changes.")


KNOB_DRAW = dict(zip(KNOBS, [_knob_k, _knob_n, _knob_lambda, _knob_alpha, _knob_eta_h]))


def draw_knobs(step: Step, device: str) -> None:
    knob = st.radio("Knob", KNOBS, horizontal=True, key="tour.knob")
    m, png = step.model, common.png(step)
    KNOB_DRAW[knob](m, device, png, common.seen(m, device, png))
