"""Class vs class: the PMI maps of two classes side by side and their difference (Fig. 5, 20)."""
import streamlit as st

from explainers.errors import ExplainerError
from explainers.methods.pmi import pmi_map
from ui import cache, plots, plots_pmi
from ui.sidebar import require
from ui.widgets import target_picker

st.title("Class vs class")
st.caption(
    "PMI maps of two classes from one run (no new forwards when you switch classes): what supports one "
    "class may oppose the other, or not. Try a two-shape sample. The difference is "
    "PMI(A) − PMI(B) = log₂ [p(A|x) / p(B|x)] − log₂ [p(A|x without the patch) / p(B|x without the patch)]: "
    "red pixels favour A over B."
)
ctx = require()
try:
    clf = cache.classifier(ctx.model_id, ctx.device)
    seen = plots_pmi.to_uint8(clf.pixels(cache.decode_image(ctx.png)).numpy())
    top = cache.predict(ctx.model_id, ctx.device, ctx.png, 5)
except ExplainerError as e:
    st.error(str(e))
    st.stop()

params = plots_pmi.pmi_controls(clf.input_size, key="cvc")
ca, cb = st.columns(2)
with ca:
    a = target_picker(top, key="cvc.a", label="Class A", index=0)
with cb:
    b = target_picker(top, key="cvc.b", label="Class B", index=1)
try:
    res = plots_pmi.pmi_result(ctx, params, "PMI for every class")
except ExplainerError as e:
    st.error(str(e))
    st.stop()

pa, pb = pmi_map(res.extras, a), pmi_map(res.extras, b)
la, lb = clf.labels[a], clf.labels[b]
cols = st.columns(3)
figs = [
    plots.map_figure(seen, pa, "signed", "bits", f"PMI · A = {la}"),
    plots.map_figure(seen, pb, "signed", "bits", f"PMI · B = {lb}"),
    plots.map_figure(seen, pa - pb, "signed", "bits", f"A − B · {la} vs {lb}"),
]
for col, fig in zip(cols, figs):
    with col:
        st.plotly_chart(fig, width="stretch")
if a == b:
    st.info("A and B are the same class: the difference is zero.")
m = res.meta
st.caption(
    f"{m['patches']} patches × {m['N_effective']} in-fills · sampler **{m['sampler']}** · {m['seconds']:.2f} s"
    + (" · from the cache" if m.get("cached") else "")
)
