"""DSSR+ (paper 001): a fine-grained mask optimised for this image, and its ablations SSR, SDR, DSSR."""
import streamlit as st

from explainers.methods.dssr import REFERENCES, DSSRConfig
from ui import page, plots, plots_dssr, widgets
from ui.widgets import help_for, kept, target_picker

st.title("DSSR+ · smallest supporting and deletion region")
st.caption(
    "A mask m (1 = highlighted) is optimised with Adam for this image. The **preserved** image keeps only "
    "the highlighted pixels, m·x + (1 − m)·r; the **deleted** image replaces them, (1 − m)·x + m·r (Eq. 1, r the "
    "reference). **SSR** keeps the class with a small mask (Eq. 2), **SDR** destroys it (Eq. 3), **DSSR** does both "
    "(Eq. 4), **DSSR+** adds a max-pool regulariser that favours compact regions and perturbs with the "
    "average-pooled mask m̄ (Eq. 5). DSSR(+) use a two-stage λ: smaller while the preserved image has lost the "
    "class, f(preserved) ≤ θ·f(x). The reference **auto** is blur when a blurred image keeps none of its class "
    "for this classifier (the photograph networks), else the one of noise, blur and mean colour that it reads as "
    "the least class evidence (the paper's uniform noise is one of them)."
)
pc = page.prologue()
clf, seen = pc.clf, pc.seen

d = DSSRConfig()
h, w = clf.input_size
c1, c2, c3 = st.columns([1, 1, 2])
variant = widgets.knob(DSSRConfig, "variant", "dssr.variant", where=c1, label="Variant")
ref = c2.radio("Reference r", REFERENCES, **kept("dssr.reference", d.reference, lambda v: v in REFERENCES), horizontal=True,
               help=help_for(DSSRConfig, "reference"))
with c3:
    cls = target_picker(pc.top, key="dssr.class", label="Explain the class (top 5)")
s1, s2, s3, s4 = st.columns(4)
paper = plots_dssr.paper_lam(variant)
lam_x = s1.select_slider("λ × H·W", plots_dssr.LAM_STEPS, **kept(f"dssr.lam.{paper:g}", paper, lambda v: v in plots_dssr.LAM_STEPS),
                         format_func=lambda v: f"{v:g} (auto)" if v == paper else f"{v:g}",
                         help=f"{help_for(DSSRConfig, 'lam')}. Shown as a multiple of 1/(H·W): auto = the paper's "
                              f"{paper:g}/224² at 224×224, i.e. {paper:g}/(H·W) here")
two_stage = variant in ("dssr+", "dssr")
theta = s2.slider("θ (two-stage λ)", 0.0, 1.0, step=0.05, **kept("dssr.theta", d.theta), disabled=not two_stage,
                  help=help_for(DSSRConfig, "theta"))
lighter = widgets.lighter(pc, ["dssr"])["dssr"]  # fewer iterations for 224 px on a CPU; the paper's one click away
iterations = widgets.knob(DSSRConfig, "iterations", "dssr.iterations", where=s3, label="Iterations",
                          default=lighter.get("iterations", d.iterations))
lr = s4.select_slider("Learning rate (Adam)", plots_dssr.LR_STEPS, **kept("dssr.lr", d.lr, lambda v: v in plots_dssr.LR_STEPS),
                      help=help_for(DSSRConfig, "lr"))

chosen = {"variant": variant, "reference": ref, "theta": theta if two_stage else d.theta, "iterations": iterations, "lr": lr}
params = {k: v for k, v in chosen.items() if v != getattr(d, k)}
if lam_x != paper:
    params["lam"] = lam_x / (h * w)

res = page.explain_or_stop(pc, "dssr", params, cls, variant.upper(), slot="dssr")

m, e = res.meta, res.extras
label = clf.labels[cls]
probs = e["probabilities"]
st.caption(plots_dssr.resolved_text(m["resolved"], (h, w), variant))

left, mid, right = st.columns(3)
mask = res.maps["mask"]
with left:
    page.chart(plots.map_figure(seen, mask, "mask", "mask value", f"Mask m̄ · {label}"))
    st.metric(f"p({label}) on the image", f"{probs['original']:.1%}")
with mid:
    page.chart(plots_dssr.image_figure(e["preserved_image"], "Preserved: only the mask kept"))
    st.metric(f"p({label}) preserved", f"{probs['preserved']:.1%}", f"{(probs['preserved'] - probs['original']) * 100:+.1f} pp")
with right:
    page.chart(plots_dssr.image_figure(e["deleted_image"], "Deleted: the mask replaced by r"))
    st.metric(f"p({label}) deleted", f"{probs['deleted']:.1%}", f"{(probs['deleted'] - probs['original']) * 100:+.1f} pp")

st.caption(
    f"mask: {mask.min():.2f} … {mask.max():.2f}, mean {mask.mean():.3f} (the share of the image highlighted) · "
    f"{m['iterations_run']} iterations in {m['seconds']:.1f} s on {m['device']} · reference "
    f"**{plots_dssr.reference_text(ref, m.get('reference', {}))}**{plots_dssr.evidence_text(m.get('reference', {}))}, "
    f"seed {m['params']['seed']}"
    + (" · from the cache" if m.get("cached") else "")
)
if plots.near_zero(mask, "mask value"):
    st.info(f"The mask stayed (nearly) empty ({plots.near_zero(mask, 'mask value')}): the data term's gradient never beat "
            "λ — the paper's Section 3.2 (SDR started at the image, or a reference the classifier still recognises). "
            "Try a smaller λ.")

page.chart(plots_dssr.history_figure(e, m["resolved"], m.get("threshold", theta), label))
st.caption(
    "Scores are the target's softmax probability, recorded before each Adam step. The loss leaves out the constant "
    "λ·#windows of the printed Eq. 5 (it would jump when λ switches). The paper's Eq. 3–5 use the deletable mask "
    "1 − m; here m is always the highlighted region."
)
