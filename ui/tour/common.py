"""What the tour's drawing shares: the built-in images, cached engine runs with a progress bar
(through ``ui.page``, so a revisited step is instant), and a chart without its mode bar."""
from __future__ import annotations

from typing import Optional

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from explainers import metrics, teaching
from explainers.core import METHODS, Explanation
from explainers.data.samples import get_sample
from explainers.methods.pmi import pmi_map

from .. import cache, page, plots
from .steps import REMOVAL_FRACTIONS, Step


@st.cache_data(max_entries=32, show_spinner=False)
def sample_png(sample_id: str) -> bytes:
    return cache.image_bytes(get_sample(sample_id).image)


@st.cache_data(max_entries=16, show_spinner=False)
def corrupted_png(sample_id: str, kind: str, severity: int = 5) -> bytes:
    return cache.image_bytes(teaching.corrupt(get_sample(sample_id).image, kind, severity))


def png(step: Step) -> bytes:
    """The step's built-in image as PNG bytes."""
    return sample_png(step.sample)


def seen(model_id: str, device: str, png: bytes) -> np.ndarray:
    """The image as the classifier sees it, RGB uint8."""
    return page.seen_image(model_id, device, png)


def run(model_id: str, device: str, png: bytes, method: str, params: dict, target: Optional[int] = None, label: str = "") -> Explanation:
    """One cached engine call under the long-work rule (``ui.work``: progress, Stop); the step stops
    where a run waits for a click or was stopped (the built-in steps take seconds)."""
    res = page.explain(model_id, device, png, method, params, target, label)
    if res is None:
        st.stop()
    return res


def chart(fig: go.Figure, key: str) -> None:
    st.plotly_chart(fig, width="stretch", key=key, config={"displayModeBar": False})


def map_of(res: Explanation, name: str, image: Optional[np.ndarray], title: str, height: int = 260) -> go.Figure:
    spec = METHODS[res.meta["method"]]
    unit = {**spec.units, **(res.meta.get("units") or {})}[name]  # as the result states it (one name per unit)
    return plots.map_figure(image, res.maps[name], spec.maps[name], unit, title, height=height)


def label_of(model_id: str, device: str, cls: int) -> str:
    return cache.classifier(model_id, device).labels[int(cls)]


def top_two(res: Explanation) -> tuple[int, int]:
    order = np.argsort(-np.asarray(res.extras["probs"]))
    return int(order[0]), int(order[1])


def probs_caption(model_id: str, device: str, png: bytes, k: int = 3) -> str:
    return " · ".join(f"{lab} {p:.0%}" for _, lab, p in cache.predict(model_id, device, png, k))


def _pixels(model_id: str, device: str, png: bytes):
    return cache.classifier(model_id, device).pixels(cache.decode_image(png))


@st.cache_data(max_entries=32, show_spinner=False)
def removal(model_id: str, device: str, png: bytes, params: tuple, target: int) -> dict[str, dict[str, np.ndarray]]:
    """Fig. 10 on one image: the class probability as the opposing (and, as a control, the
    supporting) evidence of its PMI map is removed."""
    res = cache.explanation(model_id, device, png, "pmi-ig", params, target)
    clf, pm = cache.classifier(model_id, device), pmi_map(res.extras, target)
    x = _pixels(model_id, device, png)
    return {e: teaching.remove_evidence(clf, x, pm, target, REMOVAL_FRACTIONS, evidence=e) for e in teaching.EVIDENCE}


@st.cache_data(max_entries=32, show_spinner=False)
def deletion_auc(model_id: str, device: str, png: bytes, params: tuple, target: int) -> float:
    """Deletion AUC (RISE, as the PMI paper's Fig. 4 and 13) of a PMI map: lower = more faithful."""
    res = cache.explanation(model_id, device, png, "pmi-ig", params, target)
    clf = cache.classifier(model_id, device)
    return float(metrics.deletion_auc(clf, _pixels(model_id, device, png), pmi_map(res.extras, target), target))
