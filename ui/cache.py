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
from explainers.diskcache import cached_explain


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

    In front of the engine sits the disk cache, shared by every session and kept across restarts.
    """
    clf = classifier(model_id, device)
    return cached_explain(clf, decode_image(png), method, target=target, progress=_progress, **dict(params))


def frozen(params: dict) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(params.items()))


def st_progress(label: str) -> tuple[Callable, Callable]:
    """A progress callback drawing an ``st.progress`` bar; returns ``(callback, clear)``."""
    bar = st.progress(0.0, text=label)

    def callback(done: int, total: int, message: str = "") -> None:
        bar.progress(min(1.0, done / max(total, 1)), text=f"{label} {message}".strip())

    return callback, bar.empty
