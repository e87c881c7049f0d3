"""Home: the image as the classifier sees it and its top-5 classes."""
import numpy as np
import streamlit as st

from explainers.errors import ExplainerError
from ui import cache, plots
from ui.sidebar import require

st.title("Image & prediction")
ctx = require()
try:
    clf = cache.classifier(ctx.model_id, ctx.device)
    seen = clf.pixels(cache.decode_image(ctx.png))
    top = cache.predict(ctx.model_id, ctx.device, ctx.png, 5)
except ExplainerError as e:
    st.error(str(e))
    st.stop()

left, right = st.columns([1, 2])
with left:
    st.image((seen.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), caption=f"as the classifier sees it ({clf.input_size[1]}×{clf.input_size[0]})", width="stretch")
with right:
    st.plotly_chart(plots.topk_bar(top), width="stretch")
st.caption(f"Model **{clf.id}** on **{clf.device}** · image: {ctx.image_name}")
