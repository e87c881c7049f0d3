"""The shared sidebar: classifier, image (sample or upload), device.

It stores a :class:`Context` in ``st.session_state["ctx"]``; pages read it with ``current()``.

- The classifier defaults to ``explainers.classifiers.default_for(image)`` (EfficientNet-Lite0 for
  photographs, shapes-resnet for the built-in 64-px samples; the digit classifier for a digit
  sample) until the user picks one; from then on their choice stays.
- Your own network: the models folder's networks are listed with the others (``list_classifiers``);
  an uploaded safetensors checkpoint for a listed architecture (torchvision or models folder) is
  checked (size, format, shapes) and added to the list for this browser session only
  (:func:`_uploads`); code-carrying formats are never taken through the browser.
- :func:`changed`: whether the classifier, the device or the image differs from the previous run;
  ``app.py`` then clears everything that depended on them (results, class boxes) before the page
  draws anything, so nothing of the old classifier or image stays on screen.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import streamlit as st
import torch

from explainers.classifiers import DEFAULT_CLASSIFIER, default_for
from explainers.errors import ExplainerError, one_line

from . import cache

AUTO = "sidebar.model_auto"  # the id the sidebar chose itself (not the user)
CHOSEN = "sidebar.model_chosen"  # set once the user picks a classifier
LAST = "sidebar.last"  # (model, device, image digest) of the previous run
UPLOAD_TYPES = ["png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff"]
DATASET_DEFAULTS = {"digits": "digits-cnn"}  # samples whose data has its own classifier
UPLOADS = "sidebar.uploads"  # this session's uploaded checkpoints: id -> (bytes, arch, file name)


@dataclass(frozen=True)
class Context:
    model_id: Optional[str]  # None when the chosen classifier is unavailable
    device: str
    png: Optional[bytes]  # the image as PNG bytes (hashable cache key); None when there is none
    image_name: str
    error: str = ""  # one-line reason the page cannot run
    sample_id: str = ""  # the built-in sample's id ("" for an upload)


@st.cache_data(show_spinner=False)
def _samples() -> list[tuple[str, str, bytes, str, tuple[int, int]]]:
    from explainers.data import samples

    return [(s.id, s.title, cache.image_bytes(s.image), s.dataset, s.image.size) for s in samples(photos=True)]


def _picked() -> None:
    st.session_state[CHOSEN] = True


def _default_model(ids: list[str], by_id: dict, dataset: str, size: Optional[tuple[int, int]]) -> str:
    want = DATASET_DEFAULTS.get(dataset) or (default_for(size) if size else DEFAULT_CLASSIFIER)
    if want in by_id and by_id[want]["available"]:
        return want
    return DEFAULT_CLASSIFIER if DEFAULT_CLASSIFIER in ids else ids[0]


def render() -> Context:
    sb = st.sidebar
    sb.header("Classifier")
    model_box = sb.container()  # filled after the image is known: the default depends on it
    with sb.expander("Your own weights (safetensors)"):
        _uploads()
    devices = ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    device = sb.selectbox("Device", devices, key="device", help="auto = the GPU when there is one")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"

    sb.header("Image")
    source = sb.radio("Source", ["Sample", "Upload"], horizontal=True, key="image_source")
    png: Optional[bytes] = None
    name, sample_id, dataset, size = "", "", "", None
    errors = []
    if source == "Sample":
        samples = _samples()
        if st.session_state.get("sample", 0) not in range(len(samples)):
            st.session_state["sample"] = 0
        choice = sb.selectbox("Sample", range(len(samples)), format_func=lambda k: samples[k][1], key="sample",
                              help="built-in images (shapes, digits) and scikit-image's colour photographs")
        if samples:
            sample_id, name, png, dataset, size = samples[choice]
    else:
        up = sb.file_uploader("Upload an image", type=UPLOAD_TYPES, key="upload")
        if up is not None:
            name = up.name
            try:
                img = cache.decode_image(up.getvalue())
                png, size = cache.image_bytes(img), img.size
            except ExplainerError as e:
                sb.error(one_line(e))
                errors.append(one_line(e))
        else:
            errors.append("upload an image, or pick a sample")

    entries = cache.classifier_entries() + _upload_entries()
    ids = [e["id"] for e in entries]
    by_id = {e["id"]: e for e in entries}
    state = st.session_state
    chosen = state.get(CHOSEN) or (state.get("model_id") in by_id and state.get("model_id") != state.get(AUTO))
    if not chosen:  # follow the image until the user picks a classifier
        state[AUTO] = state["model_id"] = _default_model(ids, by_id, dataset, size)

    def fmt(i: str) -> str:
        e = by_id[i]
        return e["title"] if e["available"] else f"{e['title']} — unavailable"

    model_id = model_box.selectbox("Model", ids, format_func=fmt, key="model_id", on_change=_picked,
                                   help="follows the image (photographs: an ImageNet network; built-in samples: their "
                                        "own classifier) until you pick one")
    if not by_id[model_id]["available"]:
        model_box.warning(by_id[model_id]["reason"], icon=":material/block:")
        errors.insert(0, f"{model_id} is unavailable: {by_id[model_id]['reason']}")
    ctx = Context(
        model_id=model_id if by_id[model_id]["available"] else None,
        device=device,
        png=png,
        image_name=name,
        error=errors[0] if errors else "",
        sample_id=sample_id,
    )
    st.session_state["ctx"] = ctx
    return ctx


def _uploads() -> None:
    """The upload of a safetensors checkpoint for a listed architecture; checked before use (size,
    format, shapes: one line when it fails) and kept in this browser session only."""
    from explainers.classifiers import uploads

    state = st.session_state
    held = state.setdefault(UPLOADS, {})
    st.caption("Weights for an architecture listed here (torchvision, or a network of the models folder). "
               "Files that carry code (TorchScript, .pt2, pickles) are read only from the server's disk: "
               "put them in the models folder.")
    arch = st.selectbox("Architecture", _architectures(cache._models_stamp()), key="sidebar.upload_arch")
    up = st.file_uploader("Checkpoint (.safetensors)", type=["safetensors"], key="sidebar.upload_weights",
                          help=f"at most {uploads.max_bytes() / 1e6:.0f} MB; kept for this browser session only")
    if up is None:
        state.pop("sidebar.upload_error", None)
        return
    seen = (up.file_id if hasattr(up, "file_id") else up.name, arch)
    if state.get("sidebar.upload_seen") == seen:
        return  # this file for this architecture was checked already
    state["sidebar.upload_seen"] = seen
    data = up.getvalue()
    try:
        model_id = uploads.register(data, arch, up.name)
        cache.classifier(model_id, "cpu")  # builds it and checks the shapes before anyone uses it
    except ExplainerError as e:
        state["sidebar.upload_error"] = one_line(e, 300)
        return
    state.pop("sidebar.upload_error", None)
    held[model_id] = (data, arch, up.name)
    state["model_id"], state[CHOSEN] = model_id, True


def _upload_entries() -> list[dict]:
    """This session's uploads as classifier entries (held again by this process if it let them go)."""
    from explainers.classifiers import uploads

    rows = []
    for model_id, (data, arch, name) in st.session_state.get(UPLOADS, {}).items():
        uploads.keep(model_id, data, arch, name)
        rows.append({"id": model_id, "title": f"{name} ({arch}, uploaded)", "family": "upload", "available": True,
                     "reason": "", "dataset": None, "input_size": 0})
    if st.session_state.get("sidebar.upload_error"):
        st.sidebar.error(st.session_state["sidebar.upload_error"], icon=":material/error:")
    return rows


@st.cache_data(max_entries=4, show_spinner=False)
def _architectures(stamp: tuple) -> list[str]:
    from explainers.classifiers import uploads

    return uploads.architectures()


def changed(ctx: Context) -> bool:
    """Whether the classifier, device or image differs from the previous run's (and remember this one)."""
    now = (ctx.model_id, ctx.device, None if ctx.png is None else cache.digest(ctx.png))
    before = st.session_state.get(LAST)
    st.session_state[LAST] = now
    return before is not None and before != now


def current() -> Context:
    """The sidebar's choices; pages call ``require()`` to stop with a message when unusable."""
    return st.session_state["ctx"]


def require() -> Context:
    ctx = current()
    if ctx.error or ctx.model_id is None or ctx.png is None:
        st.info(ctx.error or "pick a classifier and an image in the sidebar")
        st.stop()
    return ctx
