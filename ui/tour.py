"""The teaching tour's steps: which built-in image, which classifier, which settings, what to say and
what to draw. The page (``pages/tour.py``) only picks a step and lays out its text and its figures.

Every step uses built-in samples (``explainers.data.samples.get_sample``), never the sidebar's
upload, and picks its own classifier. Engine results go through ``ui.cache.explanation`` (memory,
then the shared disk cache, then the engine with a progress bar), so a revisited step is instant.
Settings are chosen to keep each step within a few seconds on a 2-core CPU: PMI on an 8-pixel
patch grid (K = 8, stride 8: 64 patches), DSSR+ with 100 iterations, per-image VarSal with 60 steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from explainers import metrics, teaching
from explainers.core import METHODS, Explanation
from explainers.data.samples import get_sample
from explainers.methods import softtv
from explainers.methods.dcontrol import apply_controller, masks_from_z
from explainers.methods.pmi import pmi_map
from explainers.methods.samplers import infills

from . import cache, plots, plots_dcontrol, plots_pmi, plots_varsal

PMI: dict[str, Any] = {"stride": 8}  # K = 8 and N = 8 (the paper's), 64 patches: ~500 forwards
SAMPLER_PMI: dict[str, Any] = {"stride": 8, "N": 4}  # five samplers in one step
SAMPLERS = [("patchsampler", {}), ("constant", {"value": 0.5}), ("blur", {}), ("mean", {}), ("noise", {})]
SAMPLER_TITLES = {"patchsampler": "PatchSampler", "constant": "grey", "blur": "blur", "mean": "mean", "noise": "noise"}
K_SWEEP = [(4, 4), (8, 4), (16, 8)]  # (K, stride), blur in-fills: the PatchSampler is fitted for K = 8 only
N_SWEEP = [1, 2, 8]
LAMBDA_STEPS = [0.3, 1.0, 3.0]  # × the paper's 10/(H·W)
DSSR: dict[str, Any] = {"iterations": 100}
ALPHAS = [0.0, 0.2, 0.4, 0.45]
VARSAL_PER_IMAGE: dict[str, Any] = {"mode": "per-image", "steps": 60}
REMOVAL_FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
UNTAGGED_RING = "shapes-biased/test/5"  # the biased classifier's shortcut, seen from the other side
KNOBS = ["K (PMI)", "N (PMI)", "λ (DSSR+)", "α (VarSal)", "η and h (controller)"]


# ---------------------------------------------------------------------------------------------
# plumbing: built-in images, cached runs with a progress bar, charts
# ---------------------------------------------------------------------------------------------
@st.cache_data(max_entries=32, show_spinner=False)
def sample_png(sample_id: str) -> bytes:
    return cache.image_bytes(get_sample(sample_id).image)


@st.cache_data(max_entries=16, show_spinner=False)
def corrupted_png(sample_id: str, kind: str, severity: int = 5) -> bytes:
    return cache.image_bytes(teaching.corrupt(get_sample(sample_id).image, kind, severity))


def pixels(model_id: str, device: str, png: bytes):
    return cache.classifier(model_id, device).pixels(cache.decode_image(png))


def seen(model_id: str, device: str, png: bytes) -> np.ndarray:
    """The image as the classifier sees it, RGB uint8."""
    return plots_pmi.to_uint8(pixels(model_id, device, png).numpy())


def run(model_id: str, device: str, png: bytes, method: str, params: dict, target: Optional[int] = None, label: str = "") -> Explanation:
    """One cached engine call with its own progress bar (removed when done)."""
    bar, clear = cache.st_progress(label or METHODS[method].title)
    try:
        return cache.explanation(model_id, device, png, method, cache.frozen(params), target, _progress=bar)
    finally:
        clear()


def chart(fig: go.Figure, key: str) -> None:
    st.plotly_chart(fig, width="stretch", key=key, config={"displayModeBar": False})


def map_of(res: Explanation, name: str, image: Optional[np.ndarray], title: str, height: int = 260) -> go.Figure:
    spec = METHODS[res.meta["method"]]
    return plots.map_figure(image, res.maps[name], spec.maps[name], spec.units[name], title, height=height)


def curve_figure(x, curves: dict[str, np.ndarray], xtitle: str, ytitle: str, title: str, marker: Optional[float] = None, height: int = 280) -> go.Figure:
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
    fig = go.Figure(go.Bar(x=names, y=values, text=[f"{v:.3f}" for v in values], textposition="auto"))
    fig.update_yaxes(title=ytitle)
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=30, b=0), title=dict(text=title, font=dict(size=14)))
    return fig


def label_of(model_id: str, device: str, cls: int) -> str:
    return cache.classifier(model_id, device).labels[int(cls)]


def top_two(res: Explanation) -> tuple[int, int]:
    order = np.argsort(-np.asarray(res.extras["probs"]))
    return int(order[0]), int(order[1])


@st.cache_data(max_entries=32, show_spinner=False)
def removal(model_id: str, device: str, png: bytes, params: tuple, target: int) -> dict[str, dict[str, np.ndarray]]:
    """Fig. 10 on one image: the class probability as the opposing (and, as a control, the
    supporting) evidence of its PMI map is removed."""
    res = cache.explanation(model_id, device, png, "pmi-ig", params, target)
    clf, pm = cache.classifier(model_id, device), pmi_map(res.extras, target)
    x = pixels(model_id, device, png)
    return {e: teaching.remove_evidence(clf, x, pm, target, REMOVAL_FRACTIONS, evidence=e) for e in teaching.EVIDENCE}


@st.cache_data(max_entries=32, show_spinner=False)
def deletion_auc(model_id: str, device: str, png: bytes, params: tuple, target: int) -> float:
    """Deletion AUC (RISE, as the PMI paper's Fig. 4 and 13) of a PMI map: lower = more faithful."""
    res = cache.explanation(model_id, device, png, "pmi-ig", params, target)
    clf = cache.classifier(model_id, device)
    return float(metrics.deletion_auc(clf, pixels(model_id, device, png), pmi_map(res.extras, target), target))


def probs_caption(model_id: str, device: str, png: bytes, k: int = 3) -> str:
    return " · ".join(f"{lab} {p:.0%}" for _, lab, p in cache.predict(model_id, device, png, k))


# ---------------------------------------------------------------------------------------------
# the steps
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    key: str
    title: str
    figures: str  # the papers' figures it mirrors
    text: str  # markdown, shown beside the live figures
    model: str
    sample: str
    draw: Callable[["Step", str], None]  # (step, device) -> draws the figure column

    def png(self) -> bytes:
        return sample_png(self.sample)


def draw_evidence(step: Step, device: str) -> None:
    m, png = step.model, step.png()
    res = run(m, device, png, "pmi-ig", PMI, None, "PMI for every class")
    t = int(res.meta["target"])
    lab = label_of(m, device, t)
    curves = removal(m, device, png, cache.frozen(PMI), t)
    opp, sup = curves["opposing"], curves["supporting"]
    left, right = st.columns(2)
    with left:
        chart(plots.map_figure(seen(m, device, png), pmi_map(res.extras, t), "signed", "bits", f"PMI · {lab}"), "tour.ev.pmi")
    with right:
        fr = st.select_slider("portion of the opposing evidence removed", list(REMOVAL_FRACTIONS), value=0.3,
                              format_func=lambda f: f"{f:.0%}", key="tour.ev.fraction")
        i = list(REMOVAL_FRACTIONS).index(fr)
        st.image(plots_pmi.to_uint8(opp["images"][i]), width="stretch",
                 caption=f"{opp['pixels'][i]} of {int(opp['count'])} opposing pixels blurred · p({lab}) = {opp['probability'][i]:.1%}")
    chart(curve_figure(REMOVAL_FRACTIONS, {"opposing evidence removed": opp["probability"], "supporting evidence removed (control)": sup["probability"]},
                       "portion of the evidence removed (strongest first)", f"p({lab})", "Removing evidence (Fig. 10)", marker=fr), "tour.ev.curve")
    st.caption(f"Prediction: {probs_caption(m, device, png)} · removed pixels are replaced by the blurred image.")


def draw_shortcut(step: Step, device: str) -> None:
    m, png = step.model, step.png()
    img = seen(m, device, png)
    clf = cache.classifier(m, device)
    ring = clf.labels.index("ring")
    res = run(m, device, png, "pmi-ig", PMI, None, "PMI for every class")
    t = int(res.meta["target"])
    a, b = st.columns(2)
    with a:
        chart(plots.map_figure(img, pmi_map(res.extras, ring), "signed", "bits", "PMI · ring"), "tour.sc.ring")
    with b:
        chart(plots.map_figure(img, pmi_map(res.extras, t), "signed", "bits", f"PMI · {clf.labels[t]} (top-1)"), "tour.sc.top")
    st.caption(f"{m} on this {get_sample(step.sample).label} with the tag: {probs_caption(m, device, png)}. The same classifier "
               f"on a ring *without* the tag: {probs_caption(m, device, sample_png(UNTAGGED_RING))}.")
    st.markdown("**The other methods, for the class ring**")
    cols = st.columns(4)
    for col, (method, name, title) in zip(cols, [("gradcam", "gradcam", "Grad-CAM"), ("integrated-gradients", "integrated-gradients", "Integrated Gradients"),
                                                 ("mipin", "attribution", "MIP-IN"), ("dcontrol", "mask", "controller mask")]):
        with col:
            r = run(m, device, png, method, {}, ring)
            chart(map_of(r, name, img, title, height=220), f"tour.sc.{method}")


def draw_two(step: Step, device: str) -> None:
    m, png = step.model, step.png()
    img = seen(m, device, png)
    res = run(m, device, png, "pmi-ig", PMI, None, "PMI for every class")
    a, b = top_two(res)
    la, lb = label_of(m, device, a), label_of(m, device, b)
    pa, pb = pmi_map(res.extras, a), pmi_map(res.extras, b)
    cols = st.columns(3)
    for col, (arr, title, key) in zip(cols, [(pa, f"PMI · {la}", "a"), (pb, f"PMI · {lb}", "b"), (pa - pb, f"PMI {la} − PMI {lb}", "ab")]):
        with col:
            chart(plots.map_figure(img, arr, "signed", "bits", title, height=240), f"tour.two.pmi.{key}")
    st.caption(f"Prediction: {probs_caption(m, device, png)} · red in the difference favours {la} over {lb}.")
    st.markdown("**Class sensitivity: the distribution controller and MIP-IN, one map per class**")
    cols = st.columns(4)
    for col, (method, name, cls, lab) in zip(cols, [("dcontrol", "mask", a, la), ("dcontrol", "mask", b, lb), ("mipin", "attribution", a, la), ("mipin", "attribution", b, lb)]):
        with col:
            r = run(m, device, png, method, {}, cls)
            chart(map_of(r, name, img, f"{'controller' if method == 'dcontrol' else 'MIP-IN'} · {lab}", height=220), f"tour.two.{method}.{cls}")


def draw_unsure(step: Step, device: str) -> None:
    m, png = step.model, step.png()
    img = seen(m, device, png)
    res = run(m, device, png, "pmi-ig", PMI, None, "PMI and IG")
    a, b = top_two(res)
    left, right = st.columns(2)
    with left:
        chart(plots.topk_bar(cache.predict(m, device, png, 4), "No class dominates"), "tour.un.top")
    with right:
        chart(map_of(res, "ig", img, "IG · all classes (bits)"), "tour.un.ig")
    cols = st.columns(2)
    for col, cls in zip(cols, (a, b)):
        with col:
            chart(plots.map_figure(img, pmi_map(res.extras, cls), "signed", "bits", f"PMI · {label_of(m, device, cls)}", height=240), f"tour.un.pmi.{cls}")
    ig = np.asarray(res.extras["patch_ig"])
    st.caption(f"IG = Σ_c p(c|x) · PMI(c) (Eq. 5), never negative: the most informative of the {len(ig)} patches carries "
               f"{float(ig.max()):.2f} bits, the median one {float(np.median(ig)):.3f} bits.")


def draw_samplers(step: Step, device: str) -> None:
    m, png = step.model, step.png()
    img = seen(m, device, png)
    clf = cache.classifier(m, device)
    x01 = pixels(m, device, png)
    st.markdown("**In-fills of one patch** (its 3K×3K neighbourhood, the patch greyed out, then 5 in-fills)")
    x0, y0, x1, y1 = get_sample(step.sample).box
    box = ((x0 + x1) // 2 - 4, (y0 + y1) // 2 - 8)  # a patch on the object, its ring half background
    c_img, c_rows = st.columns([1, 3])
    with c_img:
        st.image(plots_pmi.with_box(img, (*box, box[0] + 8, box[1] + 8)), width="stretch", caption="the patch")
    with c_rows:
        for s, extra in SAMPLERS:
            out = infills(clf, x01, box, K=8, N=5, sampler=s, seed=0, **extra)
            st.image(plots_pmi.infill_mosaic(out, scale=2), caption=SAMPLER_TITLES[s])
    cols = st.columns(len(SAMPLERS))
    aucs = []
    for col, (s, extra) in zip(cols, SAMPLERS):
        params = {**SAMPLER_PMI, "sampler": s, **extra}
        with col:
            res = run(m, device, png, "pmi-ig", params, None, f"PMI · {SAMPLER_TITLES[s]}")
            t = int(res.meta["target"])
            aucs.append(deletion_auc(m, device, png, cache.frozen(params), t))
            chart(plots.map_figure(img, pmi_map(res.extras, t), "signed", "bits", SAMPLER_TITLES[s], height=200), f"tour.smp.{s}")
            st.caption(f"deletion AUC {aucs[-1]:.3f}")
    chart(bar_figure([SAMPLER_TITLES[s] for s, _ in SAMPLERS], aucs, "deletion AUC (lower = better)", "Deletion AUC per sampler (Fig. 13)"), "tour.smp.auc")
    st.caption("Mind each map's scale: a sampler that can guess the missing patch from its ring (the PatchSampler on a "
               "plain shape) gives it little PMI — a patch earns attribution only when it is both unpredictable and relevant "
               "(Sec. III-A). Deletion AUC: the top class's probability as the map's highest pixels are blacked out, 32 steps.")


def _knob_k(m: str, device: str, png: bytes, img: np.ndarray) -> None:
    cols = st.columns(len(K_SWEEP))
    for col, (K, stride) in zip(cols, K_SWEEP):
        with col:
            res = run(m, device, png, "pmi-ig", {"K": K, "stride": stride, "sampler": "blur"}, None, f"PMI, K = {K}")
            chart(plots.map_figure(img, res.maps["pmi"], "signed", "bits", f"K = {K} (stride {stride})", height=240), f"tour.k.{K}")
    st.caption("In-fills: blur (the committed PatchSampler is fitted for K = 8 only; blur works at any K).")


def _knob_n(m: str, device: str, png: bytes, img: np.ndarray) -> None:
    maps = {}
    cols = st.columns(len(N_SWEEP))
    for col, N in zip(cols, N_SWEEP):
        with col:
            maps[N] = run(m, device, png, "pmi-ig", {**PMI, "N": N}, None, f"PMI, N = {N}").maps["pmi"]
            chart(plots.map_figure(img, maps[N], "signed", "bits", f"N = {N}", height=240), f"tour.n.{N}")
    ref = maps[N_SWEEP[-1]]
    st.caption("Pearson ρ to the N = 8 map: " + ", ".join(f"N = {N}: {np.corrcoef(maps[N].ravel(), ref.ravel())[0, 1]:.3f}" for N in N_SWEEP[:-1])
               + " · PatchSampler, K = 8, stride 8.")


def _knob_lambda(m: str, device: str, png: bytes, img: np.ndarray) -> None:
    c1, c2 = st.columns(2)
    scale = c1.select_slider("λ, × the paper's 10/(H·W)", LAMBDA_STEPS, value=1.0, key="tour.dssr.lam", format_func=lambda v: f"{v:g}×")
    two = c2.toggle("two-stage λ (small λ until f(preserved) > θ)", value=True, key="tour.dssr.two")
    h, w = cache.classifier(m, device).input_size
    params = {**DSSR, "lam": scale * 10.0 / (h * w), **({} if two else {"lam_small": 1.0})}
    res = run(m, device, png, "dssr", params, None, "DSSR+")
    left, right = st.columns(2)
    with left:
        chart(map_of(res, "mask", img, f"DSSR+ mask · λ = {scale:g}× 10/(H·W)"), "tour.dssr.mask")
    with right:
        ex = res.extras
        it = np.arange(1, len(ex["lam"]) + 1)
        fig = curve_figure(it, {"f(preserved)": ex["preserved_score"], "f(deleted)": ex["deleted_score"]}, "iteration", "probability", "Scores and λ per iteration")
        lam = np.asarray(ex["lam"], dtype=np.float64)
        fig.add_trace(go.Scatter(x=it, y=lam / max(lam.max(), 1e-12), mode="lines", name="λ (÷ its maximum)", line=dict(color="grey", width=1)))
        chart(fig, "tour.dssr.trace")
    fin = res.meta["final"]
    st.caption(f"preserved {fin['preserved']:.1%} · deleted {fin['deleted']:.1%} · mask mean {fin['mask_mean']:.2f} · {len(ex['lam'])} iterations, noise reference.")


def _knob_alpha(m: str, device: str, png: bytes, img: np.ndarray) -> None:
    alpha = st.select_slider("α (prior correlation of neighbours)", ALPHAS, value=0.4, key="tour.varsal.alpha")
    res = run(m, device, png, "varsal", {**VARSAL_PER_IMAGE, "alpha": alpha}, None, "VarSal, per image")
    left, right = st.columns(2)
    with left:
        chart(map_of(res, "mean", img, f"posterior mean · α = {alpha:g}"), "tour.varsal.mean")
    with right:
        chart(map_of(res, "std", img, f"posterior std · α = {alpha:g}"), "tour.varsal.std")
    h, w = cache.classifier(m, device).input_size
    chart(plots_varsal.prior_figure(softtv.prior_picture(h, w, alpha, n_samples=3, seed=0), alpha, height=220), "tour.varsal.prior")


def _knob_eta_h(m: str, device: str, png: bytes, img: np.ndarray) -> None:
    res = run(m, device, png, "dcontrol", {}, None, "Distribution controller")
    c1, c2 = st.columns(2)
    eta = c1.slider("η", 0.5, 2.5, 1.5, 0.5, key="tour.dc.eta")
    h = c2.slider("h", 1.0, 4.0, 2.5, 0.5, key="tour.dc.h")
    z = np.asarray(res.extras["z"], dtype=np.float64)
    mask, _ = masks_from_z(z, cache.classifier(m, device).input_size, "customised", eta, h)
    left, right = st.columns(2)
    with left:
        chart(plots.map_figure(img, mask, "mask", "relevance", f"mask · η = {eta:g}, h = {h:g}"), "tour.dc.mask")
    with right:
        chart(plots_dcontrol.density_figure(apply_controller(z, "customised", eta, h), "customised", eta, h, height=260), "tour.dc.density")
    st.caption("The generator's stored z is re-shaped live (no recompute): the ranking stays, the distribution changes.")


KNOB_DRAW = dict(zip(KNOBS, [_knob_k, _knob_n, _knob_lambda, _knob_alpha, _knob_eta_h]))


def draw_knobs(step: Step, device: str) -> None:
    knob = st.radio("Knob", KNOBS, horizontal=True, key="tour.knob")
    m, png = step.model, step.png()
    KNOB_DRAW[knob](m, device, png, seen(m, device, png))


def draw_uncertainty(step: Step, device: str) -> None:
    m = step.model
    kind = st.radio("Corruption (severity 5 of 5)", teaching.CORRUPTIONS, horizontal=True, key="tour.unc.kind")
    rows = [("original", step.png()), (kind, corrupted_png(step.sample, kind, 5))]
    for name, png in rows:
        res = run(m, device, png, "varsal", {}, None, f"VarSal · {name}")
        img = seen(m, device, png)
        c0, c1, c2 = st.columns([1, 2, 2])
        with c0:
            st.image(img, width="stretch", caption=f"{name}: {probs_caption(m, device, png, 2)}")
        with c1:
            chart(map_of(res, "mean", img, f"mean · {name}", height=220), f"tour.unc.mean.{name}")
        with c2:
            std = res.maps["std"]
            chart(map_of(res, "std", img, f"std · {name}", height=220), f"tour.unc.std.{name}")
        st.caption(f"{name}: std {float(std.min()):.2f} … {float(std.max()):.2f}, mean {float(std.mean()):.2f} (prior s.d.) · "
                   + ("amortised encoder" if res.meta.get("amortised") else "per-image"))


STEPS: list[Step] = [
    Step("evidence", "Evidence for and against", "PMI paper, Fig. 8 and 10", (
        "A PMI map has two signs: **red** patches support the class, **blue** ones oppose it (Eq. 4, in bits). "
        "In Fig. 8 the horns argue against *ox*, which explains why VGG19 said *hartebeest*. Here the second shape "
        "opposes the classifier's top class. Fig. 10 checks that the negative evidence is really negative: remove it "
        "and the prediction gets **more** confident; removing the supporting evidence instead (the control) makes it collapse."
    ), "shapes-resnet", "shapes-two/test/6", draw_evidence),
    Step("shortcut", "A shortcut the classifier learned", "PMI paper, Fig. 17 and 19", (
        "In Fig. 17 a person supports *swing* and in Fig. 19 the printed word supports *Band Aid*: the training data "
        "taught the classifier a correlate, and the PMI map shows it. **shapes-biased-resnet** was trained on shapes where "
        "every ring, and nothing else, carries an \"OK\" tag. On this *triangle* with the tag the PMI map for *ring* is red on "
        "the tag, and the tag opposes *triangle*. Below: what Grad-CAM, Integrated Gradients, MIP-IN and the distribution "
        "controller say about *ring* on the same image."
    ), "shapes-biased-resnet", "shapes-biased/test/2", draw_shortcut),
    Step("two", "Two objects, two classes", "PMI paper, Fig. 5 and 20", (
        "A star and a cross; the classifier hesitates between the two. One PMI run gives every class's map (Fig. 5): "
        "each shape supports its own class, and — Fig. 20's point — a supporter of one class need not oppose the other. "
        "The difference map is log-odds in bits. Below, class sensitivity: the distribution controller's mask and MIP-IN's "
        "attribution for each of the two classes — a class-sensitive method must move with the class."
    ), "shapes-resnet", "shapes-two/test/3", draw_two),
    Step("unsure", "An unsure classifier", "PMI paper, Fig. 6 and 9", (
        "When no class dominates (Fig. 9a: *bassoon* 8%, *stethoscope* 7%, *horn* 7%), which class-specific map should one "
        "show? The **IG map** needs no class: IG = KL(p(Y|x) ‖ p(Y|x without the patch)) = the expected PMI (Eq. 5), "
        "in bits (Fig. 9b), from the same forwards. Here the classifier spreads its belief over a few classes; IG shows where "
        "it looked (Fig. 6), the PMI maps of the top two what each class makes of it."
    ), "shapes-resnet", "shapes/test/15", draw_unsure),
    Step("samplers", "Why the sampler matters", "PMI paper, Fig. 3, 4, 13 (and 14)", (
        "PMI marginalises a patch by averaging the prediction over in-fills drawn given its 3K×3K neighbourhood (Eq. 3); "
        "grey, mean or noise in-fills are out of distribution (Fig. 3, 14), so the classifier reacts to the artefact too. "
        "On ImageNet the PatchSampler gives cleaner maps (Fig. 4) and a lower deletion AUC (Fig. 13). On these small shapes "
        "the gap mostly vanishes — over the first 12 shapes test images (N = 4, stride 8) the five mean AUCs lie within 0.02 "
        "and the winner changes from image to image: one image's metric is not a verdict."
    ), "shapes-resnet", "shapes/test/3", draw_samplers),
    Step("knobs", "The knobs", "PMI Fig. 22, 23 · DSSR+ Sec. 3.3 · VarSal Eq. 4, Fig. 9 · controller Fig. 2", (
        "**K** (Fig. 22): larger patches give smoother, more interpretable maps; **N** (Fig. 23): a few in-fills already "
        "give nearly the same map (the paper settles on N = 8). **λ** (DSSR+, Eq. 4) weighs the mask's size, in two stages: "
        "smaller while the preserved image's score is at most θ, larger afterwards (Sec. 3.3). **α** (VarSal) sets how strongly "
        "the soft-TV prior ties neighbours; **η, h** (controller, Fig. 2): η = 1.5 makes sigmoid(ηz) nearly uniform, h = 2.5 skews it right."
    ), "shapes-resnet", "shapes/test/3", draw_knobs),
    Step("uncertainty", "Uncertainty over the explanation", "VarSal paper, Fig. 7", (
        "VarSal treats the saliency map as a random variable and returns its posterior mean (the explanation) and standard "
        "deviation (the uncertainty over it). The paper finds the uncertainty on the object's border for clean images, and "
        "noisy standard-deviation maps for images corrupted as in ImageNet-C (brightness, motion blur at severity 5), while "
        "the mean still finds the object. Compare an easy image with a corrupted copy, and check whether the shapes' "
        "amortised encoder behaves as the paper's does: here its std is lowest on the object itself."
    ), "shapes-resnet", "shapes/test/3", draw_uncertainty),
]
