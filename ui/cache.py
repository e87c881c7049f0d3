"""Cached engine calls for the pages.

Models load once per process (``st.cache_resource``); results are cached with ``st.cache_data``
keyed on plain values only (model id, device, image bytes, method, frozen params, target) — never
on a model object. Errors the user caused come back as ``ExplainerError`` for the page to show.
"""
from __future__ import annotations

import io
from typing import Any, Callable, Optional

import streamlit as st
from PIL import Image

import explainers
from explainers.core import Explanation
from explainers.data.images import load_image
from explainers.diskcache import cached_explain, entry_path


@st.cache_resource(max_entries=8, show_spinner="Loading the classifier…")
def classifier(model_id: str, device: str) -> explainers.Classifier:
    return explainers.load_classifier(model_id, device=device)


@st.cache_data(max_entries=16, show_spinner=False)
def classifier_entries() -> list[dict]:
    return [e.as_dict() for e in explainers.list_classifiers()]


@st.cache_data(max_entries=64, show_spinner=False)
def decode_image(data: bytes) -> Image.Image:
    """Uploaded bytes -> RGB image (raises ExplainerError on bad files)."""
    return load_image(io.BytesIO(data))


def image_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@st.cache_data(max_entries=32, show_spinner=False)
def predict(model_id: str, device: str, png: bytes, topk: int = 5) -> list[tuple[int, str, float]]:
    clf = classifier(model_id, device)
    return clf.predict(decode_image(png), topk=topk)


@st.cache_data(max_entries=128, show_spinner=False)
def _explanation(model_id: str, device: str, png: bytes, method: str, params: tuple[tuple[str, Any], ...], target: Optional[int]) -> Explanation:
    clf = classifier(model_id, device)
    return cached_explain(clf, decode_image(png), method, target=target, **dict(params))


def explanation(
    model_id: str,
    device: str,
    png: bytes,
    method: str,
    params: tuple[tuple[str, Any], ...],
    target: Optional[int],
    _progress: Optional[Callable] = None,
) -> Explanation:
    """``explain`` with plain-valued, hashable arguments (``params`` as sorted (key, value) pairs).

    Three levels: the in-memory ``st.cache_data`` (keyed on the plain values), the disk cache shared
    by every session and kept across restarts, and the engine. A miss is computed *outside* the
    ``st.cache_data`` function, so its progress bar (an element of the page) is never recorded for
    replay; the cached function then reads the fresh disk entry.
    """
    clf = classifier(model_id, device)
    image = decode_image(png)
    computed = False
    if _progress is not None and not entry_path(clf, image, method, target, **dict(params)).exists():
        result = cached_explain(clf, image, method, target=target, progress=_progress, **dict(params))
        if not entry_path(clf, image, method, target, **dict(params)).exists():
            return result  # the disk cache is not writable: keep what was computed
        computed = True
    result = _explanation(model_id, device, png, method, params, target)  # st.cache_data: a copy
    if computed:
        result.meta["cached"] = False  # read back from the entry just written, but computed now
    return result


def frozen(params: dict) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(params.items()))


def st_progress(label: str) -> tuple[Callable, Callable]:
    """A progress callback drawing an ``st.progress`` bar; returns ``(callback, clear)``."""
    bar = st.progress(0.0, text=label)

    def callback(done: int, total: int, message: str = "") -> None:
        bar.progress(min(1.0, done / max(total, 1)), text=f"{label} {message}".strip())

    return callback, bar.empty
