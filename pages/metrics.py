"""Faithfulness: how far to trust each map — deletion / insertion curves and localisation metrics on
the current image, the same metrics averaged over a dataset, and the sanity checks."""
import numpy as np
import streamlit as st

from explainers.core import METHODS
from explainers.errors import ExplainerError
from explainers.evaluation import METRICS
from ui import cache, grid, page, plots_metrics, sanity_check, widgets, work

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
    chosen = st.multiselect("Methods", options, **widgets.kept("metrics.methods", fast, lambda v: set(v) <= set(options)),
                            help="every map of each method is scored; each method and each map's metrics follow the "
                                 "long-work rule (an estimate, and a click for anything over half a minute)")

region = page.region_for(pc.png, clf)
results = {}
for m in chosen:
    try:
        r = page.explain(pc.model_id, pc.device, pc.png, m, {}, target, slot=f"metrics.{m}")
        for name in (r.maps if r is not None else {}):
            label = m if len(r.maps) == 1 else f"{m} · {name}"
            scores = page.image_metrics(pc, r, name, region, slot=f"metrics.scores.{label}")
            if scores is not None:
                results[label] = scores
    except ExplainerError as e:
        st.warning(page.failure(e, METHODS[m].title), icon=":material/error:")

if results:
    page.chart(plots_metrics.curves_figure(results), key="metrics.curves")
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
    d_method = c1.selectbox("Method", options, **widgets.kept("metrics.ds.method", "gradcam" if "gradcam" in options else options[0],
                                                                    lambda v: v in options))
    limit = c2.slider("Images", 2, 100, **widgets.kept("metrics.ds.limit", 10),
                      help=f"the first images of the {data} test split (default 10)")
    d_metrics = c3.multiselect("Metrics", list(METRICS), **widgets.kept(
        "metrics.ds.metrics", [m for m in ("pointing", "deletion", "insertion") if m in METRICS], lambda v: set(v) <= set(METRICS)),
        format_func=lambda m: f"{m} — {METRICS[m].help}")
    if d_metrics:
        out = work.run("metrics.dataset", (pc.model_id, pc.device, data, d_method, tuple(d_metrics), limit),
                       f"{d_method} on {limit} {data} images",
                       lambda p: page.run_dataset(clf, pc.model_id, data, d_method, d_metrics, limit, {}, progress=p),
                       lambda: page.dataset_seconds(pc, d_method, limit), click=True)
        if out.state == "failed":
            st.error(page.failure(out.error))
        elif out.ok:
            summary = out.result
            st.caption(f"{d_method} on the first {limit} images of {data}/test — mean and 95% confidence interval "
                       f"(rows kept on disk: a new run with the same settings resumes). CLI: `python -m explainers evaluate "
                       f"--model {pc.model_id} --method {d_method} --data {data} --metric {','.join(summary)} --limit {limit}`")
            st.dataframe([{"metric": k, "mean": s["mean"], "95% CI": None if not s["n"] else f"[{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]", "n": s["n"]}
                          for k, s in summary.items()], hide_index=True)
            page.chart(plots_metrics.summary_figure(summary), key="metrics.ds.fig")

st.header("Sanity check")
st.caption(
    "Adebayo et al.'s parameter randomisation, as in the PMI paper's Fig. 24 and VarSal's Fig. 4: the classifier's layers "
    "are re-initialised one more at a time from the top down (on a copy), and each map is compared with the original by "
    "Spearman rank correlation and SSIM. Every network's map is made the same way as the original's. Beside it, the "
    "reference: the original map against a second run on the unchanged network made the same way (another seed, or "
    "another fit) — the method's own noise. A map follows the weights only where the randomised correlation falls "
    "clearly below the reference. Label sensitivity: the map for the runner-up class against this one."
)
st.caption(sanity_check.AMORTISED_NOTE)
s1, s2 = st.columns([1, 3])
s_method = s1.selectbox("Method", options, **widgets.kept("metrics.sanity.method", "gradcam" if "gradcam" in options else options[0],
                                                                lambda v: v in options),
                        help="every network's map is made the same way: MIP-IN and the amortised methods are refitted on "
                             "each network (MIP-IN on 2,000 images: seconds a network; VarSal's short fit about a minute a "
                             "network on a CPU), or VarSal and the controller run per image on each")
s_how = "refit"
if sanity_check.is_amortised(s_method):
    s_how = s1.radio("Amortised maps", list(sanity_check.HOW), format_func=sanity_check.HOW.get,
                     **widgets.kept("metrics.sanity.how", "refit", lambda v: v in sanity_check.HOW),
                     help="how the original and every randomised network's maps are made (the same way for all: "
                          "never the committed fit on one side and a per-image map on the other)")
with s1:
    out = work.run("metrics.sanity", (pc.model_id, pc.device, cache.digest(pc.png), s_method, s_how, target), "Sanity check",
                   lambda p: sanity_check.run_sanity(clf, cache.decode_image(pc.png), s_method, target, s_how, progress=p),
                   lambda: sanity_check.sanity_seconds(pc, s_method, s_how), click=True)
if out.state == "failed":
    st.error(page.failure(out.error))
elif out.ok:
    r, lab = out.result["result"], out.result["label"]
    page.chart(plots_metrics.sanity_figure(r), key="metrics.sanity.fig", where=s2)

    def num(v):
        return f"{v:.2f}" if np.isfinite(v) else "n/a"

    s1.metric("Spearman, all layers random", num(r.spearman[-1]))
    s1.metric("Reference: same network, made the same way", num(r.reference_spearman),
              help=f"the original map against {r.reference_how} (SSIM {num(r.reference_ssim)})")
    s1.metric(f"Spearman vs class {clf.labels[lab['other']]}", num(lab["spearman"]),
              help=f"SSIM {lab['ssim']:.2f}, l2 distance {lab['l2']:.3g} (MIP-IN Sec. 6.4)")
    s1.caption(f"{r.method} · {r.map_name} · class {clf.labels[r.target]} · seed {r.seed}. How: {r.how}; "
               f"reference: {r.reference_how}.")
