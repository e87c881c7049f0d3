"""Home: the image as the classifier sees it and its top-5 classes."""
import streamlit as st

from ui import page, plots

st.title("Image & prediction")
pc = page.prologue()

left, right = st.columns([1, 2])
with left:
    st.image(pc.seen, caption=f"as the classifier sees it ({pc.clf.input_size[1]}×{pc.clf.input_size[0]})", width="stretch")
with right:
    page.chart(plots.topk_bar(pc.top))
st.caption(f"Model **{pc.clf.id}** on **{pc.clf.device}** · image: {pc.image_name}")
