"""Patch geometry for PMI / IG: patch positions, 3K×3K neighbourhoods and what of them is known,
and pasting in-fills back into copies of the image.

Borders: a neighbourhood that reaches past the image edge is ZERO-padded there, and ``known``
marks the pixels a sampler may use: inside the image and outside the hidden K×K patch. (Reflect
padding, used before, copied up to K − 1 rows of the hidden patch into the ring — a leak.)
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def patch_positions(size: int, K: int, stride: int) -> np.ndarray:
    """Top-left offsets 0, S, 2S, ... of K-wide patches fully inside ``size`` pixels.

    When (size − K) is not a multiple of S the last offset size − K is added, so that every pixel
    is covered by at least one patch (Algorithm 1 distributes each patch's value to its pixels;
    an uncovered border would get no value).
    """
    pos = list(range(0, size - K + 1, stride))
    if pos[-1] != size - K:
        pos.append(size - K)
    return np.asarray(pos, dtype=np.int64)


def patch_boxes(h: int, w: int, K: int, stride: int) -> np.ndarray:
    """(P, 4) int boxes x0, y0, x1, y1 (exclusive) of all patches, row-major."""
    ys, xs = patch_positions(h, K, stride), patch_positions(w, K, stride)
    y0, x0 = np.meshgrid(ys, xs, indexing="ij")
    y0, x0 = y0.ravel(), x0.ravel()
    return np.stack([x0, y0, x0 + K, y0 + K], axis=1)


def pad_image(x: torch.Tensor, K: int) -> torch.Tensor:
    """Pad (B, C, H, W) by K zeros on every side (nothing of the image is copied outwards)."""
    return F.pad(x, (K, K, K, K))


def hole_mask(K: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(3K, 3K) float: 1 on the ring, 0 on the centre K×K patch."""
    m = torch.ones(3 * K, 3 * K, device=device)
    m[K : 2 * K, K : 2 * K] = 0
    return m


def _windows(xp: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor, K: int) -> torch.Tensor:
    """(P, C, 3K, 3K) windows of the K-padded (C, H + 2K, W + 2K) ``xp`` at patch corners (y0, x0)."""
    ar = torch.arange(3 * K, device=xp.device)
    rows = (y0.to(xp.device)[:, None] + ar)[:, :, None]
    cols = (x0.to(xp.device)[:, None] + ar)[:, None, :]
    return xp[:, rows, cols].permute(1, 0, 2, 3)


def neighbourhoods(x01: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor, K: int) -> torch.Tensor:
    """The 3K×3K neighbourhoods (P, 3, 3K, 3K) centred on the patches at (y0, x0) of x01 (1, 3, H, W).

    Zero outside the image; the centre holds the patch itself, which every sampler ignores (see
    :func:`known`)."""
    return _windows(pad_image(x01, K)[0], y0, x0, K)


def known(h: int, w: int, y0: torch.Tensor, x0: torch.Tensor, K: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(P, 1, 3K, 3K) float: 1 where a neighbourhood's pixel lies inside the h×w image and outside the
    hidden patch, 0 elsewhere — all a sampler may condition on."""
    inside = pad_image(torch.ones(1, 1, h, w, device=device), K)[0]
    return _windows(inside, y0, x0, K) * hole_mask(K, device)


def paste(x01: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor, fills: torch.Tensor) -> torch.Tensor:
    """Copies of x01 (1, 3, H, W) with fills (B, 3, K, K) written at (y0[b], x0[b])."""
    B, _, K, _ = fills.shape
    out = x01.expand(B, -1, -1, -1).clone()
    ar = torch.arange(K, device=x01.device)
    rows = (y0.to(x01.device)[:, None] + ar)[:, :, None]
    cols = (x0.to(x01.device)[:, None] + ar)[:, None, :]
    b = torch.arange(B, device=x01.device)[:, None, None]
    out.permute(0, 2, 3, 1)[b, rows, cols] = fills.permute(0, 2, 3, 1).to(out.dtype)
    return out
