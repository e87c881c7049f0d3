"""Distribution controller (paper 003): raw and fine-tuned masks, η/h re-applied live, Eq. 7 vs the mask."""
import numpy as np
import streamlit as st

from explainers.errors import ExplainerError
from explainers.methods.dcontrol import GENERATORS, TRANSFORMERS, DControlConfig, apply_controller, masks_from_z
from ui import page, plots_dcontrol, widgets
from ui.widgets import help_for, kept, target_picker

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
transformer = c1.radio("Transformer", TRANSFORMERS, **kept("dc.transformer", d.transformer, lambda v: v in TRANSFORMERS),
                       horizontal=True, help=help_for(DControlConfig, "transformer"))
generator = c2.selectbox("Generator", GENERATORS, **kept("dc.generator", d.generator, lambda v: v in GENERATORS),
                         help=help_for(DControlConfig, "generator"))
with c3:
    cls = target_picker(pc.top, key="dc.class", label="Explain the class (top 5)")
params = {k: v for k, v in {"transformer": transformer, "generator": generator}.items() if v != getattr(d, k)}
params = {**widgets.lighter(pc, ["dcontrol"])["dcontrol"], **params}  # fewer per-image iterations for 224 px on a CPU

res = page.explain_or_stop(pc, "dcontrol", params, cls, "Distribution controller", slot="dcontrol")
m = res.meta
trained_eta = float(m.get("trained_eta") or d.eta)
trained_h = float(m.get("trained_h") or d.h)

s1, s2 = st.columns(2)
basic = transformer == "basic"
eta = s1.slider("η (Eq. 6)", 0.1, 5.0, step=0.1, **kept(f"dc.eta.{trained_eta}", trained_eta), disabled=basic,
                help=f"{help_for(DControlConfig, 'eta')}; starts at the value the generator was trained with ({trained_eta:g}) "
                     "and is re-applied to the stored z without a new run")
h = s2.slider("h (Eq. 6)", 0.2, 6.0, step=0.1, **kept(f"dc.h.{trained_h}", trained_h), disabled=basic,
              help=f"{help_for(DControlConfig, 'h')}; starts at the trained value ({trained_h:g}) and is re-applied "
                   "to the stored z without a new run")
try:
    mask, fine = masks_from_z(res.extras["z"], clf.input_size, transformer, eta, h, res.extras["v"])
    coarse = apply_controller(np.asarray(res.extras["z"], dtype=np.float64), transformer, eta, h)
except ExplainerError as e:
    page.stop(e)

label = clf.labels[cls]
page.show_maps(seen, [(mask, "mask", "relevance", f"Raw mask · {label}"),
                      (fine, "positive", "relevance × probability", f"Fine-tuned · {label}")], keys="dc.")

if m.get("amortised"):
    how = (f"**fitted generator** ({m.get('trained_transformer')} transformer, trained with η = {trained_eta:g}, "
           f"h = {trained_h:g} on *{m.get('trained_on')}*)")
else:
    how = (f"**per-image optimisation** of a free {m['coarse_size'][0]}×{m['coarse_size'][1]} map "
           f"({m.get('iterations')} steps, η = {trained_eta:g}, h = {trained_h:g}"
           + (f", deletion term × {m['delete']:g}" if m.get("delete") else ", preservation loss only")
           + ") — no fitted generator for this model")
shown = "ReLU(z)" if basic else f"η = {eta:g}, h = {h:g}"
st.caption(
    f"Generator: {how}. Shown with {shown}"
    + ("" if basic or (eta == trained_eta and h == trained_h) else " (re-applied to the stored z: same ranking, new distribution)")
    + f" · coarse map {m['coarse_size'][0]}×{m['coarse_size'][1]}, bilinear upsampling · {m['seconds']:.2f} s on {m['device']}"
    + (" · from the cache" if m.get("cached") else "")
)

d1, d2 = st.columns(2)
with d1:
    page.chart(plots_dcontrol.density_figure(coarse, transformer, eta, h))
    st.caption("The curve assumes z ~ N(0, 1); instance normalisation gives z mean 0 and variance 1 but not "
               "necessarily a normal shape, so the histogram shows how close this image comes.")
with d2:
    page.chart(plots_dcontrol.finetune_figure(res.extras["finetune_fraction"], res.extras["finetune_q"],
                                              res.extras["finetune_q_monotone"], label))
    st.caption(f"q_max = {m['q_max']:.3f} (blurred image: {m['q_reference']:.3f}). Pixels kept after the monotone "
               "curve reaches q_max get a fine-tuned score of 0.")
