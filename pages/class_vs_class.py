"""Class vs class: the PMI maps of two classes side by side and their difference (Fig. 5, 20)."""
import streamlit as st

from explainers.methods.pmi import pmi_map
from ui import page, plots
from ui.widgets import pmi_controls, target_picker

st.title("Class vs class")
st.caption(
    "PMI maps of two classes from one run (no new forwards when you switch classes): what supports one "
    "class may oppose the other, or not. Try a two-shape sample. The difference is "
    "PMI(A) − PMI(B) = log₂ [p(A|x) / p(B|x)] − log₂ [p(A|x without the patch) / p(B|x without the patch)]: "
    "red pixels favour A over B."
)
pc = page.prologue()
clf, seen = pc.clf, pc.seen

params = pmi_controls(clf.input_size, key="cvc")
ca, cb = st.columns(2)
with ca:
    a = target_picker(pc.top, key="cvc.a", label="Class A", index=0)
with cb:
    b = target_picker(pc.top, key="cvc.b", label="Class B", index=1)
res = page.explain_or_stop(pc, "pmi-ig", params, label="PMI for every class")

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
