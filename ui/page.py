"""The page scaffold every page in ``pages/`` uses, so a page only arranges widgets and figures.

- :func:`prologue`: require a classifier and an image from the sidebar, load the classifier, its
  top-5 and the image as the classifier sees it; one ``st.error`` and ``st.stop()`` on a bad input.
- :func:`with_progress`: THE progress runner — an ``st.progress`` bar (share done, time left once
  it can tell) around one engine call, removed when the call returns or fails; :func:`explain`
  is the common case (a cached ``explain`` that stops the page with one error line).
- :func:`failure` / :func:`stop`: user-facing messages, one line (``explainers.errors.one_line``).
- engine calls some pages need beyond ``ui.cache`` (the image as the classifier sees it, the
  in-fills of one patch, the metrics of one map, a dataset evaluation, the sanity check), so pages
  hold no tensor work.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, TypeVar

import numpy as np
import streamlit as st

import explainers
from explainers import evaluation, metrics, sanity
from explainers.core import METHODS, Explanation
from explainers.errors import ExplainerError, one_line

from . import cache, plots, sidebar

T = TypeVar("T")


# ------------------------------------------------------------------------------------ messages


USER_LIMIT = 600  # an ExplainerError is written for the user (often ending in the command that fixes it): keep it whole


def failure(e: BaseException, what: str = "") -> str:
    """One line for the user: the message of an ``ExplainerError`` (their input), else the bug's
    type and its first words (never a traceback)."""
    if isinstance(e, ExplainerError):
        text = one_line(e, USER_LIMIT)
        return f"{what}: {text}" if what else text
    return f"{what + ' failed' if what else 'Failed'}: {type(e).__name__}: {one_line(e)}"


def stop(e: BaseException, what: str = "") -> NoReturn:
    """Show ``e`` in one ``st.error`` box and stop the page."""
    st.error(failure(e, what))
    st.stop()
    raise AssertionError("unreachable")  # st.stop() raises; this keeps type checkers honest


# ------------------------------------------------------------------------------------ the prologue


@dataclass(frozen=True)
class PageContext:
    """What every page starts from: the sidebar's choices, the loaded classifier, its top classes
    and the image as the classifier sees it."""

    model_id: str
    device: str
    png: bytes  # the image as PNG bytes (the cache key)
    image_name: str
    clf: explainers.Classifier
    top: list[tuple[int, str, float]]  # (class index, label, probability), best first
    seen: np.ndarray  # RGB uint8 (H, W, 3) at the classifier's input size


def seen_image(model_id: str, device: str, png: bytes) -> np.ndarray:
    """The image as the classifier sees it (resized, cropped), RGB uint8 (one small resize: not cached)."""
    clf = cache.classifier(model_id, device)
    return plots.to_uint8(clf.pixels(cache.decode_image(png)).numpy())


def prologue(topk: int = 5) -> PageContext:
    """The shared start of a page: stops with an info box when the sidebar has no usable classifier
    or image, and with one error line when loading or predicting fails."""
    ctx = sidebar.require()
    try:
        clf = cache.classifier(ctx.model_id, ctx.device)
        top = cache.predict(ctx.model_id, ctx.device, ctx.png, topk)
        seen = seen_image(ctx.model_id, ctx.device, ctx.png)
    except ExplainerError as e:
        stop(e)
    return PageContext(ctx.model_id, ctx.device, ctx.png, ctx.image_name, clf, top, seen)


def sidebar_device() -> str:
    """The sidebar's device (for pages, like the tour, that bring their own image)."""
    ctx = st.session_state.get("ctx")
    return ctx.device if ctx is not None else "cpu"


# ------------------------------------------------------------------------------------ progress


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def with_progress(label: str, call: Callable[[Callable], T]) -> T:
    """``call(progress)`` with an ``st.progress`` bar drawn where this is called.

    ``progress(done, total, message)`` is the engine's callback: the bar shows the share done and,
    after a second of work, the time left at the rate so far. The bar is removed when ``call``
    returns or raises (a cache hit never reports, so it only flashes).
    """
    bar = st.progress(0.0, text=label)
    start = time.monotonic()

    def progress(done: int, total: int, message: str = "") -> None:
        share = min(1.0, done / max(total, 1))
        text = f"{label} {message}".strip() + f" · {share:.0%}"
        elapsed = time.monotonic() - start
        if 0 < done < total and elapsed > 1.0:
            text += f" · about {_duration(elapsed * (total - done) / done)} left"
        bar.progress(share, text=text)

    try:
        return call(progress)
    finally:
        bar.empty()


def explain(model_id: str, device: str, png: bytes, method: str, params: dict[str, Any],
            target: Optional[int] = None, label: str = "") -> Explanation:
    """A cached ``explain`` (memory, disk, engine) with a progress bar; raises ``ExplainerError``."""
    return with_progress(label or METHODS[method].title, lambda p: cache.explanation(
        model_id, device, png, method, cache.frozen(params), target, _progress=p))


def explain_or_stop(pc: PageContext, method: str, params: dict[str, Any], target: Optional[int] = None,
                    label: str = "") -> Explanation:
    """:func:`explain` for the page's classifier and image; a bad input stops the page with one line."""
    try:
        return explain(pc.model_id, pc.device, pc.png, method, params, target, label)
    except ExplainerError as e:
        stop(e)


# ------------------------------------------------------------------------------------ engine calls


def infills(model_id: str, device: str, png: bytes, box_xy: tuple[int, int], K: int, N: int, sampler: str,
            value: float = 0.5, seed: int = 0) -> dict[str, np.ndarray]:
    """N in-fills of the K×K patch at ``box_xy`` and the neighbourhood they see (PMI, Fig. 14).
    (Not cached: the fitted sampler files are not in the key.)"""
    from explainers.methods.samplers import infills as draw

    clf = cache.classifier(model_id, device)
    return draw(clf, clf.pixels(cache.decode_image(png)), box_xy, K=K, N=N, sampler=sampler, seed=seed, value=value)


@st.cache_data(max_entries=8, show_spinner=False)
def _sample_regions() -> dict[bytes, tuple]:
    from explainers.data import samples

    return {cache.image_bytes(s.image): (s.mask, s.box) for s in samples() if s.mask is not None or s.box is not None}


def region_for(png: bytes, clf) -> Optional[np.ndarray]:
    """The object's mask (bool, at the classifier's input size, transformed as the image is) when
    the image is a built-in sample with one; None for an uploaded image."""
    region = _sample_regions().get(png)
    if region is None:
        return None
    return evaluation.object_mask(clf, cache.decode_image(png), *region)


@st.cache_data(max_entries=256, show_spinner=False)
def image_metrics(model_id: str, device: str, png: bytes, saliency: np.ndarray, target: int, region: Optional[np.ndarray], steps: int = 32) -> dict:
    """Deletion and insertion curves and every metric of one map on one image."""
    clf = cache.classifier(model_id, device)
    x = clf.pixels(cache.decode_image(png))
    fd, pd = metrics.deletion_curve(clf, x, saliency, target, steps=steps)
    fi, pi = metrics.insertion_curve(clf, x, saliency, target, steps=steps)
    out = {"deletion_curve": (fd, pd), "insertion_curve": (fi, pi), "deletion AUC ↓": metrics.auc(fd, pd),
           "insertion AUC ↑": metrics.auc(fi, pi), "M_F % ↑": metrics.m_f(clf, x, saliency, target),
           "KL (VarSal) ↓": metrics.kl_auc(clf, x, saliency)}
    if region is not None:
        out["pointing game"] = "hit" if metrics.pointing_game(saliency, region) else "miss"
        out["M_I % ↑"] = metrics.m_i(saliency, region)
        out["box accuracy ↑"] = metrics.bbox_accuracy(saliency, region)
    return out


def results_path(model_id: str, data: str, method: str, metric_names: list[str], params: dict) -> Path:
    """Where the Faithfulness page keeps a dataset run's rows (resumed by the next click with the same settings)."""
    from explainers.data import cache_dir

    key = hashlib.sha256(repr((model_id, data, method, sorted(metric_names), sorted(params.items()))).encode()).hexdigest()[:12]
    return cache_dir().parent / "runs" / f"{model_id}_{data}_{method}_{key}.jsonl"


def run_dataset(model_id: str, device: str, data: str, method: str, metric_names: list[str], limit: int, params: dict,
                progress: Optional[Callable] = None) -> dict:
    """The metrics of ``method`` on the first ``limit`` test images of ``data``: means and 95% CIs."""
    from explainers.data import load_dataset

    clf = cache.classifier(model_id, device)
    ds = load_dataset(data, "test", limit=limit)
    rows = evaluation.evaluate(clf, ds, method, metric_names, results_path(model_id, data, method, metric_names, params),
                               params, limit=limit, progress=progress)
    return evaluation.summarise(rows, metric_names)


def run_sanity(model_id: str, device: str, png: bytes, method: str, target: int, seed: int = 0, params: tuple = (),
               progress: Optional[Callable] = None) -> dict:
    """The cascading randomisation and label sensitivity of one method on one image (the page
    keeps the result in its session state). ``progress`` follows the layers."""
    clf = cache.classifier(model_id, device)
    image = cache.decode_image(png)
    r = sanity.cascading_randomisation(clf, image, method, target=target, seed=seed, progress=progress, **dict(params))
    lab = sanity.label_sensitivity(clf, image, method, target=target, **dict(params))
    return {"result": r, "label": {k: v for k, v in lab.items() if k != "maps"}, "label_maps": lab["maps"]}
