"""Faithfulness and localisation metrics for saliency maps of any method.

One function per metric; each takes a raw map (H, W) (numpy or torch; only its ranking matters)
and returns a plain float (curves return ``(fractions, values)`` numpy arrays). The image ``x01``
is a pixel tensor (3, H, W) or (1, 3, H, W) in [0, 1] (``clf.pixels(pil)``), the map is at the
same size; ``clf`` is a :class:`~explainers.classifiers.base.Classifier` or a callable returning
class probabilities (B, C) for pixel batches (B, 3, H, W). Perturbed images are built in one
tensor per batch and run through the classifier in batches on its device.

- :func:`deletion_curve` / :func:`deletion_auc` — RISE (Petsiuk et al. 2018), as the PMI paper
  (000, Sec. IV-B) uses it: the target's probability as the most relevant pixels are removed
  (replaced by black, RISE's choice), area under the curve over the fraction removed. Lower is better.
- :func:`insertion_curve` / :func:`insertion_auc` — RISE: the probability as the most relevant pixels
  are put back into a blurred copy. Higher is better.
- :func:`m_f` — faithfulness M_F (paper 003, Eq. 8): area under the class probability as the
  pixels are revealed in decreasing order of relevance, Δ = 1/32;
- :func:`m_i` — explainability M_I (paper 003, Eq. 9): area under the precision–recall curve of
  the ranked pixels against the object's bounding boxes;
- :func:`pointing_game` — paper 003, Section 4.2.2: does the map's maximum fall inside the object?
- :func:`bbox_accuracy` — paper 004, Section 6.3: the fraction of the top-n pixels inside a box
  of n pixels (Quantus calls it relevance rank accuracy);
- :func:`apc`, :func:`positive_apc`, :func:`completeness` — paper 004, Eq. 10–11 (MIP-IN's
  source signal; defined in :mod:`explainers.methods.mipin`, re-exported here);
- :func:`kl_curve` — paper 002, Section 4.4: KL(p(Y|x) ‖ p(Y|x̃)) when the *least* salient k%
  of the pixels are set to zero. Lower is better.

Ties: a map may have many equal values (a basic-transformer mask is 0 on half the image, a
constant map is all ties). The metrics never break ties by pixel position: M_F, deletion,
insertion, the KL curve and bounding-box accuracy take a tie group proportionally (every pixel
of the group blended in by the same fraction — for a linear model the expectation over random
tie-breaks), M_I takes one precision–recall point per distinct value (as
``sklearn.metrics.average_precision_score``), and the pointing game counts a hit only if every
maximal pixel is inside.

The curves and the metrics read from them (M_F, deletion, insertion, KL) live in
:mod:`explainers.curves`; the localisation metrics (M_I, pointing game, bounding-box accuracy) here.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .curves import (  # re-exported: every metric from one module
    ArrayLike, auc, baseline_image, deletion_auc, deletion_curve, faithfulness_curve, insertion_auc,
    insertion_curve, kl_auc, kl_curve, m_f, reveal_masks,
)
from .curves import _map2d, _np
from .errors import ExplainerError


# ---------------------------------------------------------------------------------------------
# localisation


def box_mask(shape: tuple[int, int], boxes: Any) -> np.ndarray:
    """Bool (H, W): inside any of ``boxes`` — one ``(x0, y0, x1, y1)`` (x1, y1 exclusive) or a
    (K, 4) array. A bool (H, W) array is returned as it is (a ground-truth mask)."""
    b = _np(boxes)
    if b.dtype == bool:
        if b.shape != tuple(shape):
            raise ExplainerError(f"the object mask has shape {b.shape}, the map {tuple(shape)}")
        return b
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    out = np.zeros(shape, dtype=bool)
    h, w = shape
    for x0, y0, x1, y1 in b:
        x0, y0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        x1, y1 = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
        if x1 > x0 and y1 > y0:
            out[y0:y1, x0:x1] = True
    return out


def m_i(saliency: ArrayLike, boxes: Any) -> float:
    """Explainability M_I in percent (paper 003, Eq. 9): the pixels ranked by ``saliency`` are the
    results of a retrieval whose relevant items are the pixels inside the boxes::

        M_I = Σ_i P_i (R_i − R_{i−1}) × 100%

    ``P_i`` = fraction of the top-i pixels inside a box, ``R_i`` = fraction of the in-box pixels
    among the top i. One point per distinct map value (ties are retrieved together), which equals
    the per-pixel sum when there are no ties. ``boxes``: one ``(x0, y0, x1, y1)``, a (K, 4)
    array, or a bool (H, W) object mask. 100% = every in-box pixel ranked above every other one;
    a constant map scores the in-box fraction of the image.
    """
    s = _map2d(saliency)
    rel = box_mask(s.shape, boxes).ravel()
    n_rel = int(rel.sum())
    if n_rel == 0:
        raise ExplainerError("m_i: the boxes cover no pixel of the map")
    flat = s.ravel()
    order = np.argsort(-flat, kind="stable")
    vals = flat[order]
    hits = np.cumsum(rel[order])
    last = np.r_[np.nonzero(np.diff(vals))[0], flat.size - 1]  # last index of each tie group
    tp = hits[last].astype(np.float64)
    precision = tp / (last + 1)
    recall = tp / n_rel
    d_recall = np.diff(np.r_[0.0, recall])
    return float(np.sum(precision * d_recall) * 100.0)


def pointing_game(saliency: ArrayLike, target_region: Any) -> bool:
    """Paper 003, Section 4.2.2: a hit when the map's maximum falls inside the object
    (``target_region``: a box, (K, 4) boxes or a bool (H, W) mask). With several maximal pixels,
    a hit needs all of them inside. M_PG = hits / (hits + misses) over a data set."""
    s = _map2d(saliency)
    region = box_mask(s.shape, target_region)
    return bool(region[s == s.max()].all())



def bbox_accuracy(saliency: ArrayLike, boxes: Any) -> float:
    """Bounding-box (localisation) accuracy, paper 004, Section 6.3: with ``n`` pixels inside the
    box(es), the fraction ``m / n`` of the top-``n`` pixels of ``saliency`` that lie inside.
    ``boxes``: one ``(x0, y0, x1, y1)``, a (K, 4) array or a bool (H, W) mask. 1 = the box is
    exactly the top of the ranking, 0 = none of it; a constant map scores n / (H·W) (ties are
    taken proportionally). The paper keeps images whose boxes cover under 33% of the image;
    that selection is the caller's."""
    s = _map2d(saliency)
    region = box_mask(s.shape, boxes)
    n = int(region.sum())
    if n == 0:
        raise ExplainerError("bbox_accuracy: the box covers no pixel of the map")
    keep = reveal_masks(s, [n / s.size])[0]
    return float(keep[region].sum() / n)


def random_map(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A uniformly random map (the control of paper 002's benchmark and a floor for every metric)."""
    return np.random.default_rng(seed).random(tuple(shape))


# ---------------------------------------------------------------------------------------------
# MIP-IN's completeness (paper 004, Eq. 10-11): defined with the method, exposed here

from .methods.mipin import apc, completeness, positive_apc  # noqa: E402

__all__ = [
    "apc", "auc", "baseline_image", "bbox_accuracy", "box_mask", "completeness", "deletion_auc", "deletion_curve",
    "faithfulness_curve", "insertion_auc", "insertion_curve", "kl_auc", "kl_curve", "m_f", "m_i", "pointing_game",
    "positive_apc", "random_map", "reveal_masks",
]
