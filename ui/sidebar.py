"""The shared sidebar: classifier, image (sample or upload), device.

It stores a :class:`Context` in ``st.session_state["ctx"]``; pages read it with ``current()``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import streamlit as st
import torch

from explainers.classifiers import DEFAULT_CLASSIFIER
from explainers.errors import ExplainerError, one_line

from . import cache


@dataclass(frozen=True)
class Context:
    model_id: Optional[str]  # None when the chosen classifier is unavailable
    device: str
    png: Optional[bytes]  # the image as PNG bytes (hashable cache key); None when there is none
    image_name: str
    error: str = ""  # one-line reason the page cannot run


@st.cache_data(show_spinner=False)
def _samples() -> list[tuple[str, str, bytes]]:
    from explainers.data import samples

    return [(s.id, s.title, cache.image_bytes(s.image)) for s in samples()]


def render() -> Context:
    sb = st.sidebar
    sb.header("Classifier")
    entries = cache.classifier_entries()
    ids = [e["id"] for e in entries]
    by_id = {e["id"]: e for e in entries}
    default = ids.index(DEFAULT_CLASSIFIER) if DEFAULT_CLASSIFIER in ids else 0

    def fmt(i: str) -> str:
        e = by_id[i]
        return e["title"] if e["available"] else f"{e['title']} — unavailable"

    model_id = sb.selectbox("Model", ids, index=default, format_func=fmt, key="model_id")
    errors = []
    if not by_id[model_id]["available"]:
        sb.warning(by_id[model_id]["reason"], icon=":material/block:")
        errors.append(f"{model_id} is unavailable: {by_id[model_id]['reason']}")

    devices = ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    device = sb.selectbox("Device", devices, key="device", help="auto = the GPU when there is one")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"

    sb.header("Image")
    source = sb.radio("Source", ["Sample", "Upload"], horizontal=True, key="image_source")
    png: Optional[bytes] = None
    name = ""
    if source == "Sample":
        samples = _samples()
        choice = sb.selectbox("Sample", range(len(samples)), format_func=lambda k: samples[k][1], key="sample")
        if samples:
            _, name, png = samples[choice]
    else:
        up = sb.file_uploader(
            "Upload an image", type=["png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff"], key="upload"
        )
        if up is not None:
            name = up.name
            try:
                png = cache.image_bytes(cache.decode_image(up.getvalue()))
            except ExplainerError as e:
                sb.error(one_line(e))
                errors.append(one_line(e))
        else:
            errors.append("upload an image, or pick a sample")
    ctx = Context(
        model_id=model_id if by_id[model_id]["available"] else None,
        device=device,
        png=png,
        image_name=name,
        error=errors[0] if errors else "",
    )
    st.session_state["ctx"] = ctx
    return ctx


def current() -> Context:
    """The sidebar's choices; pages call ``require()`` to stop with a message when unusable."""
    return st.session_state["ctx"]


def require() -> Context:
    ctx = current()
    if ctx.error or ctx.model_id is None or ctx.png is None:
        st.info(ctx.error or "pick a classifier and an image in the sidebar")
        st.stop()
    return ctx
