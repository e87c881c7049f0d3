"""Side by side: every method's maps for the chosen classifier, image and class, in one grid."""
import functools

import numpy as np
import streamlit as st

from explainers.core import METHODS, Explanation
from explainers.errors import ExplainerError
from ui import cache, grid, widgets
from ui.sidebar import require


st.title("Side by side")
ctx = require()
try:
    clf = cache.classifier(ctx.model_id, ctx.device)
    top = cache.predict(ctx.model_id, ctx.device, ctx.png, 5)
    image = (clf.pixels(cache.decode_image(ctx.png)).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
except ExplainerError as e:
    st.error(str(e))
    st.stop()

methods = grid.available_methods()
head = st.columns([1, 3])
with head[0]:
    target = widgets.target_picker(top)
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
        r = grid.run_cell(ctx.model_id, ctx.device, ctx.png, m, params[m], target)
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
