"""Faithfulness: how far to trust each map — deletion / insertion curves and localisation metrics on
the current image, the same metrics averaged over a dataset, and the sanity checks."""
import numpy as np
import streamlit as st

from explainers.core import METHODS
from explainers.errors import ExplainerError
from explainers.evaluation import METRICS
from ui import grid, page, plots_metrics, widgets

st.title("Faithfulness · how far to trust each map")
st.caption(
    "Deletion removes the pixels a map ranks first (black, as RISE) and watches the class probability fall; insertion "
    "puts them back into a blurred copy. M_F (paper 003, Eq. 8) is the insertion curve normalised between the blurred "
    "and the real image; the KL column is VarSal's benchmark (the least salient 10…90% zeroed, Sec. 4.4). The pointing "
    "game, M_I (Eq. 9) and box accuracy (MIP-IN Sec. 6.3) compare the map with the object's box."
)
pc = page.prologue()
clf = pc.clf

options = grid.available_methods()
fast = [m for m in ("gradcam", "integrated-gradients", "occlusion", "mipin") if m in options]
head = st.columns([1, 3])
with head[0]:
    target = widgets.target_picker(pc.top, key="metrics.target")
with head[1]:
    chosen = st.multiselect("Methods", options, default=fast, key="metrics.methods",
                            help="every map of each method is scored; slow methods (PMI, DSSR+) take seconds per image")

region = page.region_for(pc.png, clf)
results = {}
for m in chosen:
    try:
        r = page.explain(pc.model_id, pc.device, pc.png, m, {}, target)
        for name, arr in r.maps.items():
            label = m if len(r.maps) == 1 else f"{m} · {name}"
            results[label] = page.image_metrics(pc.model_id, pc.device, pc.png, arr, int(r.meta["target"]), region)
    except ExplainerError as e:
        st.warning(page.failure(e, METHODS[m].title), icon=":material/error:")

if results:
    st.plotly_chart(plots_metrics.curves_figure(results), width="stretch", key="metrics.curves")
    st.dataframe(plots_metrics.metrics_table(results), hide_index=True, width="stretch")
    if region is None:
        st.info("The box metrics (pointing game, M_I, box accuracy) need the object's box or mask: pick a built-in "
                "sample; an uploaded image has none.", icon=":material/crop_free:")
    st.caption("A map that scatters single pixels can look good on deletion (black dots break any image) and poor on "
               "insertion; read the two together, and against the random-map control in the README table.")

st.header("On a dataset")
data = clf.dataset
if data is None:
    st.info("This classifier has no built-in dataset; evaluate it on an image folder from the command line: "
            f"`python -m explainers evaluate --model {pc.model_id} --method gradcam --data FOLDER --metric deletion,insertion`")
else:
    c1, c2, c3 = st.columns([1, 1, 2])
    d_method = c1.selectbox("Method", options, index=options.index("gradcam") if "gradcam" in options else 0, key="metrics.ds.method")
    limit = c2.slider("Images", 2, 100, 10, key="metrics.ds.limit", help=f"the first images of the {data} test split")
    d_metrics = c3.multiselect("Metrics", list(METRICS), default=[m for m in ("pointing", "deletion", "insertion") if m in METRICS],
                               key="metrics.ds.metrics", format_func=lambda m: f"{m} — {METRICS[m].help}")
    if st.button(f"Evaluate {d_method} on {limit} {data} images", key="metrics.ds.run", disabled=not d_metrics):
        try:
            st.session_state["metrics.ds.result"] = (d_method, data, limit, page.with_progress(
                f"{d_method} on {data}", lambda p: page.run_dataset(pc.model_id, pc.device, data, d_method, d_metrics, limit, {}, progress=p)))
        except ExplainerError as e:
            st.error(page.failure(e))
    done = st.session_state.get("metrics.ds.result")
    if done:
        meth, dname, n, summary = done
        st.caption(f"{meth} on the first {n} images of {dname}/test — mean and 95% confidence interval "
                   f"(rows kept on disk: a new run with the same settings resumes). CLI: `python -m explainers evaluate "
                   f"--model {pc.model_id} --method {meth} --data {dname} --metric {','.join(summary)} --limit {n}`")
        st.dataframe([{"metric": k, "mean": s["mean"], "95% CI": None if not s["n"] else f"[{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]", "n": s["n"]}
                      for k, s in summary.items()], hide_index=True)
        st.plotly_chart(plots_metrics.summary_figure(summary), width="stretch", key="metrics.ds.fig")

st.header("Sanity check")
st.caption(
    "Adebayo et al.'s parameter randomisation, as in the PMI paper's Fig. 24 and VarSal's Fig. 4: the classifier's layers "
    "are re-initialised one more at a time from the top down (on a copy), and each map is compared with the original by "
    "Spearman rank correlation and SSIM. A method that explains the model falls towards 0; one that stays near 1 only "
    "redraws the image. Label sensitivity: the map for the runner-up class against this one."
)
s1, s2 = st.columns([1, 3])
s_method = s1.selectbox("Method", options, index=options.index("gradcam") if "gradcam" in options else 0, key="metrics.sanity.method")
s_key = (pc.model_id, pc.device, hash(pc.png), s_method, target)
if s1.button("Run the sanity check", key="metrics.sanity.run",
             help="amortised methods (VarSal, distribution controller) fall back to their per-image optimisation on "
                  "the randomised copies, which takes a while; MIP-IN is fitted on each network (300 images, a few seconds)"):
    try:
        st.session_state["metrics.sanity.result"] = (s_key, page.with_progress(
            "Randomising layer by layer", lambda p: page.run_sanity(pc.model_id, pc.device, pc.png, s_method, target, progress=p)))
    except ExplainerError as e:
        st.error(page.failure(e))
kept = st.session_state.get("metrics.sanity.result")
san = kept[1] if kept and kept[0] == s_key else None
if san:
    r, lab = san["result"], san["label"]
    s2.plotly_chart(plots_metrics.sanity_figure(r), width="stretch", key="metrics.sanity.fig")
    s1.metric("Spearman, all layers random", f"{r.spearman[-1]:.2f}" if np.isfinite(r.spearman[-1]) else "n/a")
    s1.metric(f"Spearman vs class {clf.labels[lab['other']]}", f"{lab['spearman']:.2f}" if np.isfinite(lab["spearman"]) else "n/a",
              help=f"SSIM {lab['ssim']:.2f}, l2 distance {lab['l2']:.3g} (MIP-IN Sec. 6.4)")
    s1.caption(f"{r.method} · {r.map_name} · class {clf.labels[r.target]} · seed {r.seed}")

