"""Anytime order for patch-wise maps: coarse-to-fine, every partial map exact where it is shown.

A patch-wise map (PMI, IG: Algorithm 1, line 9) gives each pixel the average of the values of the
patches covering it. Pixels covered by the same set of patches form *cells* (S×S squares between
patch starts at stride S, narrower at the border). A cell's value is final once every patch covering
it is done, and not before, so the order is planned over cells: a sparse sub-grid of cells first
(spacing a power of two, at least 3 cells along the longer side), then the cells that halve its
spacing, each level adding the patches its cells still need. A level that would cost more than half
of the patches left (at stride S = K/2 the spacing-2 level needs every patch) is replaced by the
last step: all remaining cells row by row, published in about 8 bands. Every patch is visited once
(no forward is repeated or wasted) and after each step the partial map shows the finished cells
with their final values and every other pixel blank (NaN), never a guess.

Reading chosen: the issue asks to visit "patch positions coarse-to-fine"; done literally (a sparse
sub-grid of patches) no pixel would be final before the last level, because a pixel at stride S < K
lies in several neighbouring patches. Planning over cells keeps the coarse-to-fine picture and the
promise that what is shown is final.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


def _axis_cells(starts: np.ndarray, K: int, side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Along one axis: each pixel's cell index, and every cell's covering patch-index range [lo, hi)."""
    coords = np.arange(side)
    lo = np.searchsorted(starts + K, coords, side="right")  # first patch whose end lies past the pixel
    hi = np.searchsorted(starts, coords, side="right")  # first patch that starts after the pixel
    pairs, cell = np.unique(np.stack([lo, hi], 1), axis=0, return_inverse=True)
    return cell.reshape(-1), pairs[:, 0], pairs[:, 1]


@dataclass
class Plan:
    """``order``: patch indices (row-major, as ``boxes``) in the order to visit them; ``ends``: the
    number of patches done after each level; ``boxes``/``shape``: the patches and the image."""

    order: np.ndarray
    ends: list[int]
    boxes: np.ndarray
    shape: tuple[int, int]
    published: int = 0  # levels already published

    def due(self, done: int) -> bool:
        """True once per level, when ``done`` patches (a prefix of ``order``) finish a new level."""
        level = self.published
        while level < len(self.ends) and self.ends[level] <= done:
            level += 1
        fresh = level > self.published
        self.published = level
        return fresh

    def complete(self, done: int) -> np.ndarray:
        """(H, W) bool: pixels whose covering patches are all among the first ``done`` of ``order``."""
        h, w = self.shape
        missing = np.zeros((h + 1, w + 1), dtype=np.int64)
        x0, y0, x1, y1 = (self.boxes[self.order[done:], i] for i in range(4))
        for (yy, xx), sign in (((y0, x0), 1), ((y0, x1), -1), ((y1, x0), -1), ((y1, x1), 1)):
            np.add.at(missing, (yy, xx), sign)
        return missing.cumsum(0).cumsum(1)[:h, :w] == 0

    def partial(self, values: dict[str, np.ndarray], done: int,
                distribute: Callable[[np.ndarray, np.ndarray, tuple[int, int]], np.ndarray]) -> dict[str, np.ndarray]:
        """Maps (float32, NaN where not final) from per-patch ``values`` of the first ``done`` patches
        of ``order`` (each (done,)), spread by the method's own ``distribute`` over all patches with
        the missing ones at 0 (they touch only pixels that are then blanked)."""
        keep = self.complete(done)
        out = {}
        for name, v in values.items():
            full = np.zeros(len(self.boxes), dtype=np.float64)
            full[self.order[:done]] = np.asarray(v, dtype=np.float64)
            m = distribute(full, self.boxes, self.shape).astype(np.float32)
            m[~keep] = np.nan
            out[name] = m
        return out


def coarse_to_fine(boxes: np.ndarray, shape: tuple[int, int]) -> Plan:
    """The anytime :class:`Plan` for square patches ``boxes`` (P, 4: x0, y0, x1, y1) on a grid of
    starts (as :func:`explainers.methods.samplers.patch_boxes` makes them, row-major)."""
    h, w = shape
    K = int(boxes[0, 2] - boxes[0, 0])
    ys, xs = np.unique(boxes[:, 1]), np.unique(boxes[:, 0])
    if len(ys) * len(xs) != len(boxes):
        raise ValueError("coarse_to_fine: boxes must form a full grid of starts")
    _, ylo, yhi = _axis_cells(ys, K, h)
    _, xlo, xhi = _axis_cells(xs, K, w)
    cy, cx = len(ylo), len(xlo)
    span = 1  # the first level: a sub-grid of at least 3 cells along the longer side
    while span * 2 * 3 <= max(cy, cx):
        span *= 2
    seen = np.zeros((len(ys), len(xs)), dtype=bool)
    cell_done = np.zeros((cy, cx), dtype=bool)
    order: list[np.ndarray] = []
    ends: list[int] = []

    def needs(a: int, b: int) -> np.ndarray:  # patches cell (a, b) still needs, as row-major indices
        ii, jj = np.nonzero(~seen[ylo[a]:yhi[a], xlo[b]:xhi[b]])
        return (ii + ylo[a]) * len(xs) + (jj + xlo[b])

    def close(parts: list[np.ndarray]) -> None:  # one published step; ascending, as in-fills come in chunks
        idx = np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
        if len(idx):
            order.append(idx)
            ends.append((ends[-1] if ends else 0) + len(idx))

    while span > 1:
        cells = [(a, b) for a in range(0, cy, span) for b in range(0, cx, span) if not cell_done[a, b]]
        probe = seen.copy()
        parts = []
        for a, b in cells:
            idx = needs(a, b)
            seen.flat[idx] = True
            parts.append(idx)
        cost = sum(len(p) for p in parts)
        if cost > 0.5 * (len(boxes) - (ends[-1] if ends else 0)):
            seen[:] = probe  # this level would cost most of what is left and show little: sweep instead
            break
        for a, b in cells:
            cell_done[a, b] = True
        close(parts)
        span //= 2
    # the rest: every cell row by row, published in about 8 bands
    left = len(boxes) - (ends[-1] if ends else 0)
    parts, size = [], 0
    for a in range(cy):
        for b in range(cx):
            idx = needs(a, b)
            seen.flat[idx] = True
            parts.append(idx)
            size += len(idx)
        if size >= left / 8:
            close(parts)
            parts, size = [], 0
    close(parts)
    out = np.concatenate(order) if order else np.zeros(0, dtype=np.int64)
    assert len(out) == len(boxes) and len(np.unique(out)) == len(boxes)
    return Plan(out.astype(np.int64), ends, boxes, (h, w))


def distribute(values: np.ndarray, boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """PMI's Algorithm 1, line 9, and Occlusion's averaging: the average of per-patch ``values`` (P,) or (P, M) over the patches covering each pixel.

    Sums over boxes are accumulated with 2-D difference arrays (O(P + HW), no per-pixel loop).
    Returns (H, W) or (M, H, W) float64; a pixel covered by no patch gets 0.
    """
    v = np.asarray(values, dtype=np.float64)
    squeeze = v.ndim == 1
    v = v[:, None] if squeeze else v
    h, w = shape
    x0, y0, x1, y1 = (boxes[:, i] for i in range(4))

    def accumulate(vals: np.ndarray) -> np.ndarray:
        d = np.zeros((vals.shape[1], h + 1, w + 1))
        for (yy, xx), sign in (((y0, x0), 1), ((y0, x1), -1), ((y1, x0), -1), ((y1, x1), 1)):
            np.add.at(d, (slice(None), yy, xx), sign * vals.T)
        return d.cumsum(1).cumsum(2)[:, :h, :w]

    sums = accumulate(v)
    count = accumulate(np.ones((len(boxes), 1)))[0]
    out = np.divide(sums, count, out=np.zeros_like(sums), where=count > 0)
    return out[0] if squeeze else out
