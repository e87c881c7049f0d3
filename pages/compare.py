"""Side by side: every method's maps for the chosen classifier, image and class, in one grid."""
import functools

import streamlit as st

from ui import grid, page, widgets, work

st.title("Side by side")
pc = page.prologue()

methods = grid.available_methods()
marks = grid.method_marks(pc, methods)  # told before anything runs: unavailable methods and missing fits
runnable = [m for m in methods if marks[m].available]
head = st.columns([1, 3])
with head[0]:
    target = widgets.target_picker(pc.top)
    chosen = st.multiselect("Methods", methods, format_func=lambda m: grid.mark(m, marks),
                            help="a method marked unavailable cannot run on this classifier, one marked 'no fit' "
                                 "runs a slower per-image optimisation; the list below says why and what fixes it",
                            **widgets.kept("compare.methods", runnable, lambda v: set(v) <= set(methods)))
with st.expander(f"Methods for {pc.model_id}: {len(runnable)} of {len(methods)} available"
                 + (f", {sum(bool(marks[m].fit) for m in runnable)} without their fit" if any(marks[m].fit for m in runnable) else "")):
    grid.explain_marks(marks, pc.model_id)
with head[1]:
    lighter = widgets.lighter(pc, chosen)  # fewer iterations for 224 px on a CPU; the papers' values one click away
    params = grid.knob_values(chosen, pc.clf, lighter)
with st.expander("More settings, per method"):
    tabs = st.tabs(chosen) if chosen else []
    for tab, m in zip(tabs, chosen):
        with tab:
            params[m].update(widgets.config_widgets(m, skip=[k.field for k in grid.KNOBS if k.method == m], key="compare.",
                                                    defaults=lighter.get(m)))
st.caption(
    f"**{pc.model_id}** on {pc.device} · class **{pc.clf.labels[target]}** · each cell says how long it should take; "
    f"work expected to take over {work.duration(work.LONG_SECONDS)} starts on its Run button, and a finished map is "
    "never recomputed unless its own settings change. Maps in the same unit share one colour scale."
)

results = grid.render(pc, chosen, params, target)

if results:
    # Both files are made on click (deferred), not on every rerun: drawing the PNG grid alone
    # takes most of a second, which a slider move that hits the cache should not pay.
    context = grid.about(pc, target)
    c1, c2 = st.columns(2)
    c1.download_button("Download the grid (PNG)", functools.partial(grid.export_png, pc.seen, results, context),
                       file_name="explanations.png", mime="image/png", on_click="ignore",
                       help="the model, class, methods, settings and the commands that reproduce them are in the PNG's text chunks")
    c2.download_button("Download all maps with settings (.npz)", functools.partial(grid.export_npz, results, context),
                       file_name="explanations.npz", on_click="ignore")
    with st.expander("Reproduce from the command line"):
        st.code("\n".join(grid.commands(results, pc.image_name if "." in pc.image_name else "IMAGE")), language="bash")
