"""PMI & IG maps: how much each pixel supports a class, and how informative it is (in bits)."""
import numpy as np
import streamlit as st

from explainers.errors import ExplainerError
from explainers.methods.pmi import PMIConfig, pmi_map
from explainers.methods.samplers import SAMPLERS
from ui import page, plots_pmi, widgets
from ui.widgets import pmi_controls, target_picker

st.title("PMI & IG maps")
st.caption(
    "Every K×K patch is replaced by N in-fills drawn given its 3K×3K neighbourhood (Eq. 3). "
    "**PMI** = log₂ p(y|x) − log₂ p(y|x without the patch): red supports the class, blue opposes it. "
    "**IG** = KL(p(Y|x) ‖ p(Y|x without the patch)): how informative the patch is, for any class. "
    "Each pixel shows the average over the patches covering it. One run gives the PMI of every class."
)
pc = page.prologue()
clf, seen = pc.clf, pc.seen

params = pmi_controls(clf, defaults=widgets.lighter(pc, ["pmi-ig"])["pmi-ig"])
cls = target_picker(pc.top, key="pmi.class", label="PMI for the class (top 5)")
res = page.explain_or_stop(pc, "pmi-ig", params, pc.top[0][0], "PMI & IG", slot="pmi")  # every class in one run

label = clf.labels[cls]
page.show_maps(seen, [(pmi_map(res.extras, cls), "signed", "bits", f"PMI · {label}"),
                      (res.maps["ig"], "positive", "bits", "IG · all classes")], keys="pmi.")
m = res.meta
st.caption(
    f"{m['patches']} patches × {m['N_effective']} in-fills = {m['forwards']:,} forwards in {m['seconds']:.2f} s "
    f"on {m['device']} · sampler **{m['sampler']}**"
    + (f" (fitted on *{m['sampler_data']}*)" if m.get("sampler_data") else "")
    + (" · from the cache" if m.get("cached") else "")
)

st.subheader("A look inside")
st.caption(
    "One patch, its 3K×3K neighbourhood (the patch greyed out) and N in-fills from each sampler, "
    "as the paper's Fig. 14. Measured on shapes and digits (README, PMI samplers), the PatchSampler's in-fills "
    "have the best likelihood and are the closest to real images in the classifier's features (FD); at its "
    "default temperature 0.8 (ours; the paper draws at 1) they are about as rough as real patches on shapes and "
    "a little smoother on digits. "
    "PMI values depend on the sampler (a patch replaced by grey carries far more bits than one the PatchSampler "
    "in-fills), so compare maps of different samplers by where they are red or blue, not by their values."
)
K = params["K"]
h, w = clf.input_size
c1, c2, c3 = st.columns(3)
px = c1.slider("patch x", 0, w - K, **widgets.kept("pmi.px", (w - K) // 2, lambda v: 0 <= v <= w - K, context=True),
               help=f"left edge of the patch, in pixels of the {w}×{h} input (default: the centre)")
py = c2.slider("patch y", 0, h - K, **widgets.kept("pmi.py", (h - K) // 2, lambda v: 0 <= v <= h - K, context=True),
               help=f"top edge of the patch, in pixels of the {w}×{h} input (default: the centre)")
n_show = c3.slider("in-fills shown", 1, 12, **widgets.kept("pmi.nshow", 6),
                   help="how many of the N in-fills to draw per sampler (default 6)")
c_img, c_rows = st.columns([1, 3])
with c_img:
    st.image(plots_pmi.with_box(seen, (px, py, px + K, py + K)), caption=f"patch at ({px}, {py})", width="stretch")
with c_rows:
    for s in SAMPLERS:
        try:
            out = page.infills(pc.model_id, pc.device, pc.png, (px, py), K=K, N=n_show, sampler=s,
                               value=params.get("value", PMIConfig().value))
        except ExplainerError as e:
            st.caption(f"**{s}**: {page.failure(e)}")
            continue
        st.image(plots_pmi.infill_mosaic(out), caption=s)
if np.ptp(seen) == 0:
    st.info("This image is flat: every in-fill looks alike.")
