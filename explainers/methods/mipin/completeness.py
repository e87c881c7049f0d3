"""Completeness (Section 5): APC and positive APC (Eq. 10–11) compare the logit of the source
signal with the logit of the input."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from ...classifiers.base import Classifier
from ...errors import ExplainerError
from .config import MIPINConfig
from .method import explain_batch


def _per_class_mean(values: np.ndarray, classes: Optional[np.ndarray]) -> float:
    if values.size == 0:
        raise ExplainerError("APC needs at least one sample")
    if classes is None:
        return float(values.mean())
    classes = np.asarray(classes).reshape(-1)
    if classes.shape != values.shape:
        raise ExplainerError("APC: classes must have one entry per sample")
    return float(np.mean([values[classes == c].mean() for c in np.unique(classes)]))


def _apc_terms(logit_x, logit_s) -> tuple[np.ndarray, np.ndarray]:
    fx = np.asarray(logit_x, dtype=np.float64).reshape(-1)
    fs = np.asarray(logit_s, dtype=np.float64).reshape(-1)
    if fx.shape != fs.shape:
        raise ExplainerError("APC: the two logit arrays must have the same length")
    if np.any(fx == 0):
        raise ExplainerError("APC is undefined for a logit of exactly 0 (Eq. 10 divides by |Φ(X)|)")
    return fx, fs


def apc(logit_x, logit_s, classes=None) -> float:
    """Average percentage change, Eq. 10, in percent:
    ``(1/C) Σ_c (1/N_c) Σ_i |Φ(X^i) − Φ(S^i)| / |Φ(X^i)| × 100``, where Φ is the logit of the
    class being explained (``classes[i]``, which also groups the samples; None = one group)."""
    fx, fs = _apc_terms(logit_x, logit_s)
    return 100.0 * _per_class_mean(np.abs(fx - fs) / np.abs(fx), classes)


def positive_apc(logit_x, logit_s, classes=None) -> float:
    """Positive APC, Eq. 11, in percent: as :func:`apc` with ``relu(Φ(X) − Φ(S))`` (a source signal
    that scores higher than the input counts as complete)."""
    fx, fs = _apc_terms(logit_x, logit_s)
    return 100.0 * _per_class_mean(np.maximum(fx - fs, 0.0) / np.abs(fx), classes)


def completeness(clf: Classifier, x01: torch.Tensor, targets: Sequence[int], cfg: MIPINConfig = MIPINConfig(), batch_size: int = 64) -> dict:
    """APC and positive APC of the source signals of ``x01`` (N, 3, H, W) for ``targets``."""
    if batch_size < 1:
        raise ExplainerError("batch_size must be at least 1")
    fx, fs = [], []
    targets = [int(t) for t in targets]
    for i in range(0, x01.shape[0], batch_size):
        t = targets[i : i + batch_size]
        out = explain_batch(clf, x01[i : i + batch_size], t, cfg)
        idx = torch.arange(len(t))
        fx.append(out["logits"][idx, t].cpu().numpy())
        fs.append(out["source_logits"][idx, t].cpu().numpy())
    fx, fs = np.concatenate(fx), np.concatenate(fs)
    return {"apc": apc(fx, fs, targets), "positive_apc": positive_apc(fx, fs, targets), "logit_x": fx, "logit_s": fs}

