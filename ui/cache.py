"""Cached engine calls for the pages.

Models load once per process and file version (``st.cache_resource``); results are cached with
``st.cache_data`` keyed on plain values only (model id, device, image bytes, method, frozen params,
target, and digests of the classifier's weights and of the fitted files, as the disk cache is) —
never on a model object. Errors the user caused come back as ``ExplainerError`` for the page to show.

Long work goes through ``ui.work``: :func:`lookup` answers from the caches without computing,
:func:`compute` is what the worker thread runs (the engine and its disk cache, no Streamlit), and
:func:`cost` / :func:`rates` give the estimate before the work (``explainers.cost``).
"""
from __future__ import annotations

import hashlib
import io
import threading
from pathlib import Path
from typing import Any, Callable, Optional

import streamlit as st
from PIL import Image

import explainers
from explainers import cost as _cost
from explainers.core import Explanation, make_config
from explainers.data.images import load_image
from explainers.diskcache import cache_dir, cached_explain, classifier_digest, entry_path, fits_digest


def classifier(model_id: str, device: str) -> explainers.Classifier:
    return _classifier(model_id, device, _source_stamp(model_id))


@st.cache_resource(max_entries=8, show_spinner="Loading the classifier…")
def _classifier(model_id: str, device: str, stamp: tuple) -> explainers.Classifier:
    return explainers.load_classifier(model_id, device=device)


def _source_stamp(model_id: str) -> tuple:
    """(mtime, size) of the files a classifier loads from: a rewritten checkpoint is loaded again."""
    from explainers.classifiers import EMBEDDED, models_folder, torchvision_zoo, uploads

    if model_id in EMBEDDED:
        paths = [EMBEDDED[model_id].weights, EMBEDDED[model_id].card]
    elif torchvision_zoo.is_known(model_id):
        paths = [torchvision_zoo.weight_file(model_id)]
    elif uploads.is_upload(model_id):
        return ()  # the id holds the digest of the uploaded bytes
    elif models_folder.is_known(model_id):
        paths = models_folder.files(model_id)  # the code, the weights and the sidecar metadata
    else:
        paths = [Path(model_id).expanduser()]
    out = []
    for p in paths:
        try:
            st_ = p.stat()
            out.append((st_.st_mtime_ns, st_.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


def classifier_entries() -> list[dict]:
    """``list_classifiers()`` as dicts, listed again when a models folder changes."""
    return _classifier_entries(_models_stamp())


@st.cache_data(max_entries=16, show_spinner=False)
def _classifier_entries(stamp: tuple) -> list[dict]:
    return [e.as_dict() for e in explainers.list_classifiers()]


def _models_stamp() -> tuple:
    """The models folders' files with their (mtime, size): a file added, removed or rewritten lists again."""
    from explainers.classifiers import models_folder

    out = []
    for d in models_folder.folders():
        try:
            out.extend((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(d.iterdir()) if p.is_file())
        except OSError:
            continue
    return tuple(out)


@st.cache_data(max_entries=64, show_spinner=False)
def decode_image(data: bytes) -> Image.Image:
    """Uploaded bytes -> RGB image (raises ExplainerError on bad files)."""
    return load_image(io.BytesIO(data))


def image_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def predict(model_id: str, device: str, png: bytes, topk: int = 5) -> list[tuple[int, str, float]]:
    return _predict(model_id, device, png, topk, classifier_digest(classifier(model_id, device)))


@st.cache_data(max_entries=32, show_spinner=False)
def _predict(model_id: str, device: str, png: bytes, topk: int, weights: str) -> list[tuple[int, str, float]]:
    clf = classifier(model_id, device)
    return clf.predict(decode_image(png), topk=topk)


@st.cache_data(max_entries=128, show_spinner=False)
def _explanation(model_id: str, device: str, png: bytes, method: str, params: tuple[tuple[str, Any], ...], target: Optional[int],
                 weights: str, fits: str) -> Explanation:
    # weights, fits: only keys (digests of the classifier and of the fitted files it may use)
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
    weights, fits = classifier_digest(clf), fits_digest(clf, make_config(method, **dict(params)))
    result = _explanation(model_id, device, png, method, params, target, weights, fits)  # st.cache_data: a copy
    if computed:
        result.meta["cached"] = False  # read back from the entry just written, but computed now
    return result


def frozen(params: dict) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(params.items()))


def digest(png: bytes) -> str:
    """A short content digest of image bytes (session-state keys, job keys)."""
    return hashlib.sha256(png).hexdigest()[:16]


_PATHS: dict[tuple, Path] = {}  # request key -> its disk-cache entry (computing the path hashes the pixels)
_PATHS_LOCK = threading.Lock()


def request_key(model_id: str, device: str, png: bytes, method: str, params: tuple, target: Optional[int]) -> tuple:
    """Everything that makes a result, as plain values (what a job in ``ui.work`` is keyed on)."""
    clf = classifier(model_id, device)
    return (model_id, device, digest(png), method, params, target, classifier_digest(clf),
            fits_digest(clf, make_config(method, **dict(params))))


def lookup(model_id: str, device: str, png: bytes, method: str, params: tuple, target: Optional[int],
           key: Optional[tuple] = None) -> Optional[Explanation]:
    """The result if the memory or the disk cache has it, else None (never computes it); ``key``:
    :func:`request_key` of the request, when the caller has it already."""
    key = key or request_key(model_id, device, png, method, params, target)
    where = (key, str(cache_dir()))
    with _PATHS_LOCK:
        path = _PATHS.get(where)
    if path is None:
        path = entry_path(classifier(model_id, device), decode_image(png), method, target, **dict(params))
        with _PATHS_LOCK:
            if len(_PATHS) > 4096:
                _PATHS.clear()
            _PATHS[where] = path
    if not path.exists():  # also after an eviction: never compute here
        return None
    return _explanation(model_id, device, png, method, params, target, key[-2], key[-1])


def compute(clf: explainers.Classifier, image: Image.Image, method: str, params: tuple, target: Optional[int],
            progress: Optional[Callable] = None) -> Explanation:
    """The engine through its disk cache, for a worker thread (no Streamlit call)."""
    return cached_explain(clf, image, method, target=target, progress=progress, **dict(params))


def rates(model_id: str, device: str) -> _cost.Rates:
    """This classifier's measured speed on this device (measured once per process)."""
    clf = classifier(model_id, device)
    if _cost.measured(clf):
        return _cost.forwards_per_second(clf)
    with st.spinner(f"Measuring {model_id} on {device} (once) to estimate run times…"):
        return _cost.forwards_per_second(clf)


_SPEED: dict[tuple, float] = {}  # (model, device, method) -> observed / estimated seconds of its runs here


def cost(model_id: str, device: str, method: str, params: tuple) -> tuple[_cost.Cost, float]:
    """What a run will cost (``explainers.cost.estimate``) and its expected seconds here: the measured
    rate, corrected by how long this method's earlier runs here actually took (:func:`learn`)."""
    clf = classifier(model_id, device)
    c = _cost.estimate(clf, method, dict(params))
    return c, c.seconds(rates(model_id, device)) * _SPEED.get((model_id, device, method), 1.0)


def learn(model_id: str, device: str, method: str, estimated: float, took: float) -> None:
    """A finished run's time against its estimate: later estimates of the method follow what this
    machine really did (a measurement made during a burst of other work can be off many times).
    Runs under half a second are left out (per-call overheads, not the classifier's speed)."""
    if not estimated or max(estimated, took) < 0.5:
        return
    key = (model_id, device, method)
    _SPEED[key] = min(100.0, max(0.01, _SPEED.get(key, 1.0) * took / estimated))
