"""Side by side: every method's maps for the chosen classifier, image and class, in one grid."""
import functools

import streamlit as st

from explainers.core import Explanation
from ui import grid, page, widgets

st.title("Side by side")
pc = page.prologue()
image = pc.seen

methods = grid.available_methods()
head = st.columns([1, 3])
with head[0]:
    target = widgets.target_picker(pc.top)
    chosen = st.multiselect("Methods", methods, default=methods, key="compare.methods")
with head[1]:
    params = grid.knob_values(chosen)
with st.expander("More settings, per method"):
    tabs = st.tabs(chosen) if chosen else []
    for tab, m in zip(tabs, chosen):
        with tab:
            params[m].update(widgets.config_widgets(m, skip=[k.field for k in grid.KNOBS if k.method == m], key="compare."))

results = []
flow = grid.Flow(columns=4)
for m in chosen:
    cell = flow.next()
    with cell:
        r = grid.run_cell(pc.model_id, pc.device, pc.png, m, params[m], target)
    if r is not None:
        results.append(r)
        grid.draw_maps(r, image, cell, flow)

if results:
    # Both files are made on click (deferred), not on every rerun: drawing the PNG grid alone
    # takes most of a second, which a slider move that hits the cache should not pay.
    c1, c2 = st.columns(2)
    c1.download_button("Download the grid (PNG)", functools.partial(grid.export_png, image, results), file_name="explanations.png", mime="image/png")
    c2.download_button("Download all maps with settings (.npz)", functools.partial(grid.export_npz, results), file_name="explanations.npz")
    with st.expander("Reproduce from the command line"):
        st.code("\n".join(Explanation.combine(results).meta["commands"]), language="bash")
