"""Class vs class: the PMI maps of two classes side by side and their difference (Fig. 5, 20), and the
distribution controller's masks for the same two classes."""
import numpy as np
import streamlit as st
from scipy.stats import spearmanr

from explainers.methods.pmi import pmi_map
from ui import page
from ui.widgets import pmi_controls, target_picker

st.title("Class vs class")
st.caption(
    "PMI maps of two classes from one run (no new forwards when you switch classes): what supports one "
    "class may oppose the other, or not. Try a two-shape sample. The difference is "
    "PMI(A) − PMI(B) = log₂ [p(A|x) / p(B|x)] − log₂ [p(A|x without the patch) / p(B|x without the patch)]: "
    "red pixels favour A over B. The three maps share one symmetric colour scale, so equal colours are equal bits."
)
pc = page.prologue()
clf, seen = pc.clf, pc.seen

params = pmi_controls(clf, key="cvc")
ca, cb = st.columns(2)
with ca:
    a = target_picker(pc.top, key="cvc.a", label="Class A", index=0)
with cb:
    b = target_picker(pc.top, key="cvc.b", label="Class B", index=1)
res = page.explain_or_stop(pc, "pmi-ig", params, pc.top[0][0], "PMI for every class", slot="cvc")

pa, pb = pmi_map(res.extras, a), pmi_map(res.extras, b)
la, lb = clf.labels[a], clf.labels[b]
page.show_maps(seen, [(pa, "signed", "bits", f"PMI · A = {la}"), (pb, "signed", "bits", f"PMI · B = {lb}"),
                      (pa - pb, "signed", "bits", f"A − B · {la} vs {lb}")], keys="cvc.")
if a == b:
    st.info("A and B are the same class: the difference is zero.")
m = res.meta
st.caption(
    f"{m['patches']} patches × {m['N_effective']} in-fills · sampler **{m['sampler']}** · {m['seconds']:.2f} s"
    + (" · from the cache" if m.get("cached") else "")
)

# The distribution controller's masks for the same two classes (paper 003; its generator is trained on
# the top-3 classes, so its masks can differ by class). Two runs, one per class, each cached on its own.
st.subheader("Distribution controller · the same two classes")
ra = page.explain_or_stop(pc, "dcontrol", {}, a, f"Controller mask · {la}", slot="cvc.dc.a")
rb = page.explain_or_stop(pc, "dcontrol", {}, b, f"Controller mask · {lb}", slot="cvc.dc.b")
ma, mb = ra.maps["mask"], rb.maps["mask"]
page.show_maps(seen, [(ma, "mask", "relevance", f"Controller · A = {la}"), (mb, "mask", "relevance", f"Controller · B = {lb}"),
                      (ma - mb, "signed", "relevance difference", f"A − B · {la} vs {lb}")], keys="cvc.dc.")
rho = float(spearmanr(np.ravel(ma), np.ravel(mb)).statistic) if np.ptp(ma) and np.ptp(mb) else float("nan")
st.caption(
    f"Spearman ρ between the two masks: **{rho:.2f}** (1 = the same mask whatever the class asked about; "
    f"{'fitted generator' if ra.meta.get('amortised') else 'per-image optimisation, no fitted generator for this model'})."
)
