"""Drawing the tour's steps: one function per step, given the step (its content, ``steps.py``) and
the device; each lays out its own widgets and figures in the page's figure column."""
from __future__ import annotations

from typing import Callable

import numpy as np
import streamlit as st

from explainers import teaching
from explainers.data.samples import get_sample
from explainers.methods.pmi import pmi_map

from .. import cache, page, plots, plots_pmi
from . import common
from .knobs import draw_knobs
from .steps import PMI, REMOVAL_FRACTIONS, SAMPLER_PMI, SAMPLER_TITLES, SAMPLERS, UNTAGGED_RING, Step


def draw_evidence(step: Step, device: str) -> None:
    m, png = step.model, common.png(step)
    res = common.run(m, device, png, "pmi-ig", PMI, None, "PMI for every class")
    t = int(res.meta["target"])
    lab = common.label_of(m, device, t)
    curves = common.removal(m, device, png, cache.frozen(PMI), t)
    opp, sup = curves["opposing"], curves["supporting"]
    left, right = st.columns(2)
    with left:
        common.chart(plots.map_figure(common.seen(m, device, png), pmi_map(res.extras, t), "signed", "bits", f"PMI · {lab}"), "tour.ev.pmi")
    with right:
        fr = st.select_slider("portion of the opposing evidence removed", list(REMOVAL_FRACTIONS), value=0.3,
                              format_func=lambda f: f"{f:.0%}", key="tour.ev.fraction",
                              help="share of the pixels with negative PMI blurred, strongest first (default 30%)")
        i = list(REMOVAL_FRACTIONS).index(fr)
        st.image(plots.to_uint8(opp["images"][i]), width="stretch",
                 caption=f"{opp['pixels'][i]} of {int(opp['count'])} opposing pixels blurred · p({lab}) = {opp['probability'][i]:.1%}")
    common.chart(plots.curve_figure(REMOVAL_FRACTIONS, {"opposing evidence removed": opp["probability"], "supporting evidence removed (control)": sup["probability"]},
                                    "portion of the evidence removed (strongest first)", f"p({lab})", "Removing evidence (Fig. 10)", marker=fr),
                 "tour.ev.curve")
    st.caption(f"Prediction: {common.probs_caption(m, device, png)} · removed pixels are replaced by the blurred image.")


def draw_shortcut(step: Step, device: str) -> None:
    m, png = step.model, common.png(step)
    img = common.seen(m, device, png)
    clf = cache.classifier(m, device)
    ring = clf.labels.index("ring")
    res = common.run(m, device, png, "pmi-ig", PMI, None, "PMI for every class")
    t = int(res.meta["target"])
    a, b = st.columns(2)
    with a:
        common.chart(plots.map_figure(img, pmi_map(res.extras, ring), "signed", "bits", "PMI · ring"), "tour.sc.ring")
    with b:
        common.chart(plots.map_figure(img, pmi_map(res.extras, t), "signed", "bits", f"PMI · {clf.labels[t]} (top-1)"), "tour.sc.top")
    st.caption(f"{m} on this {get_sample(step.sample).label} with the tag: {common.probs_caption(m, device, png)}. The same classifier "
               f"on a ring *without* the tag: {common.probs_caption(m, device, common.sample_png(UNTAGGED_RING))}.")
    st.markdown("**The other methods, for the class ring**")
    cols = st.columns(4)
    for col, (method, name, title) in zip(cols, [("gradcam", "gradcam", "Grad-CAM"), ("integrated-gradients", "integrated-gradients", "Integrated Gradients"),
                                                 ("mipin", "attribution", "MIP-IN"), ("dcontrol", "mask", "controller mask")]):
        with col:
            r = common.run(m, device, png, method, {}, ring)
            common.chart(common.map_of(r, name, img, title, height=220), f"tour.sc.{method}")


def draw_two(step: Step, device: str) -> None:
    m, png = step.model, common.png(step)
    img = common.seen(m, device, png)
    res = common.run(m, device, png, "pmi-ig", PMI, None, "PMI for every class")
    a, b = common.top_two(res)
    la, lb = common.label_of(m, device, a), common.label_of(m, device, b)
    pa, pb = pmi_map(res.extras, a), pmi_map(res.extras, b)
    cols = st.columns(3)
    for col, (arr, title, key) in zip(cols, [(pa, f"PMI · {la}", "a"), (pb, f"PMI · {lb}", "b"), (pa - pb, f"PMI {la} − PMI {lb}", "ab")]):
        with col:
            common.chart(plots.map_figure(img, arr, "signed", "bits", title, height=240), f"tour.two.pmi.{key}")
    st.caption(f"Prediction: {common.probs_caption(m, device, png)} · red in the difference favours {la} over {lb}.")
    st.markdown("**Class sensitivity: the distribution controller and MIP-IN, one map per class**")
    cols = st.columns(4)
    for col, (method, name, cls, lab) in zip(cols, [("dcontrol", "mask", a, la), ("dcontrol", "mask", b, lb), ("mipin", "attribution", a, la), ("mipin", "attribution", b, lb)]):
        with col:
            r = common.run(m, device, png, method, {}, cls)
            common.chart(common.map_of(r, name, img, f"{'controller' if method == 'dcontrol' else 'MIP-IN'} · {lab}", height=220), f"tour.two.{method}.{cls}")


def draw_unsure(step: Step, device: str) -> None:
    m, png = step.model, common.png(step)
    img = common.seen(m, device, png)
    res = common.run(m, device, png, "pmi-ig", PMI, None, "PMI and IG")
    a, b = common.top_two(res)
    left, right = st.columns(2)
    with left:
        common.chart(plots.topk_bar(cache.predict(m, device, png, 4), "No class dominates"), "tour.un.top")
    with right:
        common.chart(common.map_of(res, "ig", img, "IG · all classes (bits)"), "tour.un.ig")
    cols = st.columns(2)
    for col, cls in zip(cols, (a, b)):
        with col:
            common.chart(plots.map_figure(img, pmi_map(res.extras, cls), "signed", "bits", f"PMI · {common.label_of(m, device, cls)}", height=240), f"tour.un.pmi.{cls}")
    ig = np.asarray(res.extras["patch_ig"])
    st.caption(f"IG = Σ_c p(c|x) · PMI(c) (Eq. 5), never negative: the most informative of the {len(ig)} patches carries "
               f"{float(ig.max()):.2f} bits, the median one {float(np.median(ig)):.3f} bits.")


def draw_samplers(step: Step, device: str) -> None:
    m, png = step.model, common.png(step)
    img = common.seen(m, device, png)
    st.markdown("**In-fills of one patch** (its 3K×3K neighbourhood, the patch greyed out, then 5 in-fills)")
    x0, y0, x1, y1 = get_sample(step.sample).box
    box = ((x0 + x1) // 2 - 4, (y0 + y1) // 2 - 8)  # a patch on the object, its ring half background
    c_img, c_rows = st.columns([1, 3])
    with c_img:
        st.image(plots_pmi.with_box(img, (*box, box[0] + 8, box[1] + 8)), width="stretch", caption="the patch")
    with c_rows:
        for s, extra in SAMPLERS:
            out = page.infills(m, device, png, box, K=8, N=5, sampler=s, seed=0, **extra)
            st.image(plots_pmi.infill_mosaic(out, scale=2), caption=SAMPLER_TITLES[s])
    cols = st.columns(len(SAMPLERS))
    aucs = []
    for col, (s, extra) in zip(cols, SAMPLERS):
        params = {**SAMPLER_PMI, "sampler": s, **extra}
        with col:
            res = common.run(m, device, png, "pmi-ig", params, None, f"PMI · {SAMPLER_TITLES[s]}")
            t = int(res.meta["target"])
            aucs.append(common.deletion_auc(m, device, png, cache.frozen(params), t))
            common.chart(plots.map_figure(img, pmi_map(res.extras, t), "signed", "bits", SAMPLER_TITLES[s], height=200), f"tour.smp.{s}")
            st.caption(f"deletion AUC {aucs[-1]:.3f}")
    common.chart(plots.bar_figure([SAMPLER_TITLES[s] for s, _ in SAMPLERS], aucs, "deletion AUC (lower = better)", "Deletion AUC per sampler (Fig. 13)"), "tour.smp.auc")
    st.caption("Mind each map's scale: a sampler that can guess the missing patch from its ring (the PatchSampler on a "
               "plain shape) gives it little PMI — a patch earns attribution only when it is both unpredictable and relevant "
               "(Sec. III-A). Deletion AUC: the top class's probability as the map's highest pixels are blacked out, 32 steps.")


def draw_uncertainty(step: Step, device: str) -> None:
    m = step.model
    kind = st.radio("Corruption (severity 5 of 5)", teaching.CORRUPTIONS, horizontal=True, key="tour.unc.kind")
    rows = [("original", common.png(step)), (kind, common.corrupted_png(step.sample, kind, 5))]
    for name, png in rows:
        res = common.run(m, device, png, "varsal", {}, None, f"VarSal · {name}")
        img = common.seen(m, device, png)
        c0, c1, c2 = st.columns([1, 2, 2])
        with c0:
            st.image(img, width="stretch", caption=f"{name}: {common.probs_caption(m, device, png, 2)}")
        with c1:
            common.chart(common.map_of(res, "mean", img, f"mean · {name}", height=220), f"tour.unc.mean.{name}")
        with c2:
            std = res.maps["std"]
            common.chart(common.map_of(res, "std", img, f"std · {name}", height=220), f"tour.unc.std.{name}")
        st.caption(f"{name}: std {float(std.min()):.2f} … {float(std.max()):.2f}, mean {float(std.mean()):.2f} (prior s.d.) · "
                   + ("amortised encoder" if res.meta.get("amortised") else "per-image"))


DRAW: dict[str, Callable[[Step, str], None]] = {
    "evidence": draw_evidence, "shortcut": draw_shortcut, "two": draw_two, "unsure": draw_unsure,
    "samplers": draw_samplers, "knobs": draw_knobs, "uncertainty": draw_uncertainty,
}


def draw(step: Step, device: str) -> None:
    """Draw ``step``'s figures (with its widgets) on ``device``."""
    DRAW[step.key](step, device)
