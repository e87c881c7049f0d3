"""DSSR+ (paper 001): a fine-grained mask optimised for this image, and its ablations SSR, SDR, DSSR."""
import streamlit as st

from explainers.methods.dssr import REFERENCES, VARIANTS, DSSRConfig
from ui import page, plots, plots_dssr
from ui.widgets import target_picker

st.title("DSSR+ · smallest supporting and deletion region")
st.caption(
    "A mask m (1 = highlighted) is optimised with Adam for this image. The **preserved** image keeps only "
    "the highlighted pixels, m·x + (1 − m)·r; the **deleted** image replaces them, (1 − m)·x + m·r (Eq. 1, r the "
    "reference). **SSR** keeps the class with a small mask (Eq. 2), **SDR** destroys it (Eq. 3), **DSSR** does both "
    "(Eq. 4), **DSSR+** adds a max-pool regulariser that favours compact regions and perturbs with the "
    "average-pooled mask m̄ (Eq. 5). DSSR(+) use a two-stage λ: smaller while f(preserved) ≤ θ."
)
pc = page.prologue()
clf, seen = pc.clf, pc.seen

d = DSSRConfig()
h, w = clf.input_size
c1, c2, c3 = st.columns([1, 1, 2])
variant = c1.selectbox("Variant", VARIANTS, index=list(VARIANTS).index(d.variant), key="dssr.variant", help="dssr+ = Eq. 5; the others are the paper's ablations")
ref = c2.radio("Reference r", REFERENCES, index=list(REFERENCES).index(d.reference), key="dssr.reference", horizontal=True,
               help="uniform noise U(0, 1) (the paper's), the image blurred, or grey 0.5")
with c3:
    cls = target_picker(pc.top, key="dssr.class", label="Explain the class (top 5)")
s1, s2, s3, s4 = st.columns(4)
paper = plots_dssr.paper_lam(variant)
lam_x = s1.select_slider("λ × H·W", plots_dssr.LAM_STEPS, value=paper, key=f"dssr.lam.{paper:g}",
                         help=f"the paper: {paper:g}/224² at 224×224, i.e. {paper:g}/(H·W) here")
two_stage = variant in ("dssr+", "dssr")
theta = s2.slider("θ (two-stage λ)", 0.0, 1.0, d.theta, 0.05, key="dssr.theta", disabled=not two_stage,
                  help="the small λ (×0.1) is used while f(preserved) ≤ θ; not given by the paper")
iterations = s3.slider("Iterations", 10, 1000, d.iterations, 10, key="dssr.iterations", help="the paper: 300")
lr = s4.select_slider("Learning rate (Adam)", plots_dssr.LR_STEPS, value=d.lr, key="dssr.lr", help="the paper: 0.1")

chosen = {"variant": variant, "reference": ref, "theta": theta if two_stage else d.theta, "iterations": iterations, "lr": lr}
params = {k: v for k, v in chosen.items() if v != getattr(d, k)}
if lam_x != paper:
    params["lam"] = lam_x / (h * w)

res = page.explain_or_stop(pc, "dssr", params, cls, variant.upper())

m, e = res.meta, res.extras
label = clf.labels[cls]
probs = e["probabilities"]
st.caption(plots_dssr.resolved_text(m["resolved"], (h, w), variant))

left, mid, right = st.columns(3)
with left:
    st.plotly_chart(plots.map_figure(seen, res.maps["mask"], "mask", "mask value", f"Mask m̄ · {label}"), width="stretch")
    st.metric(f"p({label}) on the image", f"{probs['original']:.1%}")
with mid:
    st.plotly_chart(plots_dssr.image_figure(e["preserved_image"], "Preserved: only the mask kept"), width="stretch")
    st.metric(f"p({label}) preserved", f"{probs['preserved']:.1%}", f"{(probs['preserved'] - probs['original']) * 100:+.1f} pp")
with right:
    st.plotly_chart(plots_dssr.image_figure(e["deleted_image"], "Deleted: the mask replaced by r"), width="stretch")
    st.metric(f"p({label}) deleted", f"{probs['deleted']:.1%}", f"{(probs['deleted'] - probs['original']) * 100:+.1f} pp")

mask = res.maps["mask"]
st.caption(
    f"mask: {mask.min():.2f} … {mask.max():.2f}, mean {mask.mean():.3f} (the share of the image highlighted) · "
    f"{m['iterations_run']} iterations in {m['seconds']:.1f} s on {m['device']} · reference **{ref}**, seed {m['params']['seed']}"
    + (" · from the cache" if m.get("cached") else "")
)
if mask.max() < 0.05:
    st.info("The mask stayed (nearly) empty: the data term's gradient never beat λ — the paper's Section 3.2 "
            "(SDR started at the image, or a reference the classifier still recognises). Try a smaller λ.")

st.plotly_chart(plots_dssr.history_figure(e, m["resolved"], theta, label), width="stretch")
st.caption(
    "Scores are the target's softmax probability, recorded before each Adam step. The loss leaves out the constant "
    "λ·#windows of the printed Eq. 5 (it would jump when λ switches). The paper's Eq. 3–5 use the deletable mask "
    "1 − m; here m is always the highlighted region."
)
