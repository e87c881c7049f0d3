"""Distribution controller (paper 003): raw and fine-tuned masks, η/h re-applied live, Eq. 7 vs the mask."""
import numpy as np
import streamlit as st

from explainers.errors import ExplainerError
from explainers.methods.dcontrol import GENERATORS, TRANSFORMERS, DControlConfig, apply_controller, masks_from_z
from ui import page, plots, plots_dcontrol
from ui.widgets import target_picker

st.title("Distribution controller")
st.caption(
    "A mask generator reads the classifier's feature maps and proposes a coarse map; the **controller** "
    "instance-normalises it to z and reshapes its distribution — **customised**: sigmoid(η·z)^h (Eq. 6), "
    "**basic**: ReLU(z) (Eq. 5) — so that only a small fraction of pixels gets high scores. The generator is "
    "trained with the classification loss alone (Eq. 4). **Fine-tuning** (Section 3.3) multiplies each score "
    "by q_max − q_i, how much probability is still missing when the pixels ranked above it are kept."
)
pc = page.prologue()
clf, seen = pc.clf, pc.seen
d = DControlConfig()

c1, c2, c3 = st.columns([1, 1, 2])
transformer = c1.radio("Transformer", TRANSFORMERS, index=list(TRANSFORMERS).index(d.transformer), key="dc.transformer", horizontal=True,
                       help="the controller the generator was trained with (a fit per transformer)")
generator = c2.selectbox("Generator", GENERATORS, index=list(GENERATORS).index(d.generator), key="dc.generator",
                         help="auto: the fitted generator if there is one, else a per-image optimisation")
with c3:
    cls = target_picker(pc.top, key="dc.class", label="Explain the class (top 5)")
params = {k: v for k, v in {"transformer": transformer, "generator": generator}.items() if v != getattr(d, k)}

res = page.explain_or_stop(pc, "dcontrol", params, cls, "Distribution controller")
m = res.meta
trained_eta = float(m.get("trained_eta") or d.eta)
trained_h = float(m.get("trained_h") or d.h)

s1, s2 = st.columns(2)
basic = transformer == "basic"
eta = s1.slider("η (Eq. 6)", 0.1, 5.0, trained_eta, 0.1, key=f"dc.eta.{trained_eta}", disabled=basic,
                help="how close sigmoid(η z) comes to uniform (η ≈ 1.5 with h = 1 is nearly uniform)")
h = s2.slider("h (Eq. 6)", 0.2, 6.0, trained_h, 0.1, key=f"dc.h.{trained_h}", disabled=basic,
              help="the power that skews the scores to the right (a long tail of high scores)")
try:
    mask, fine = masks_from_z(res.extras["z"], clf.input_size, transformer, eta, h, res.extras["v"])
    coarse = apply_controller(np.asarray(res.extras["z"], dtype=np.float64), transformer, eta, h)
except ExplainerError as e:
    page.stop(e)

label = clf.labels[cls]
left, right = st.columns(2)
with left:
    st.plotly_chart(plots.map_figure(seen, mask, "mask", "relevance", f"Raw mask · {label}"), width="stretch")
with right:
    st.plotly_chart(plots.map_figure(seen, fine, "positive", "relevance × probability", f"Fine-tuned · {label}"), width="stretch")

if m.get("amortised"):
    how = (f"**fitted generator** ({m.get('trained_transformer')} transformer, trained with η = {trained_eta:g}, "
           f"h = {trained_h:g} on *{m.get('trained_on')}*)")
else:
    how = (f"**per-image optimisation** of a free {m['coarse_size'][0]}×{m['coarse_size'][1]} map "
           f"({m.get('iterations')} steps, η = {trained_eta:g}, h = {trained_h:g}) — no fitted generator for this model")
shown = "ReLU(z)" if basic else f"η = {eta:g}, h = {h:g}"
st.caption(
    f"Generator: {how}. Shown with {shown}"
    + ("" if basic or (eta == trained_eta and h == trained_h) else " (re-applied to the stored z: same ranking, new distribution)")
    + f" · coarse map {m['coarse_size'][0]}×{m['coarse_size'][1]}, bilinear upsampling · {m['seconds']:.2f} s on {m['device']}"
    + (" · from the cache" if m.get("cached") else "")
)

d1, d2 = st.columns(2)
with d1:
    st.plotly_chart(plots_dcontrol.density_figure(coarse, transformer, eta, h), width="stretch")
    st.caption("The curve assumes z ~ N(0, 1); instance normalisation gives z mean 0 and variance 1 but not "
               "necessarily a normal shape, so the histogram shows how close this image comes.")
with d2:
    st.plotly_chart(
        plots_dcontrol.finetune_figure(res.extras["finetune_fraction"], res.extras["finetune_q"],
                                       res.extras["finetune_q_monotone"], label),
        width="stretch",
    )
    st.caption(f"q_max = {m['q_max']:.3f} (blurred image: {m['q_reference']:.3f}). Pixels kept after the monotone "
               "curve reaches q_max get a fine-tuned score of 0.")
