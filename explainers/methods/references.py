"""Reference images ("baselines") that perturbation methods blend in where evidence is removed.

Shared by PMI's simple samplers, DSSR+'s reference r, VarSal's baselines and the distribution
controller's background A. All work in pixel space ((B, 3, H, W) in [0, 1]) on the input's device,
and draw randomness only from the ``torch.Generator`` they are given.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

KINDS = ("noise", "blur", "constant", "mean")


def gaussian_kernel1d(sigma: float, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def blur(x01: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding (sigma in pixels; 0 returns the input)."""
    if sigma <= 0:
        return x01
    k = gaussian_kernel1d(sigma, x01.device, x01.dtype)
    c = x01.shape[1]
    r = (k.numel() - 1) // 2
    h, w = x01.shape[-2:]
    # reflect padding needs pad < size; fall back to replicate on tiny inputs
    mode = "reflect" if r < min(h, w) else "replicate"
    y = F.pad(x01, (r, r, 0, 0), mode=mode)
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, r, r), mode=mode)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def reference(
    kind: str,
    x01: torch.Tensor,
    generator: Optional[torch.Generator] = None,
    value: float = 0.5,
    sigma: Optional[float] = None,
) -> torch.Tensor:
    """A reference image the size of ``x01``.

    - ``noise``: uniform U(0, 1) per pixel and channel (DSSR+'s default);
    - ``blur``: ``x01`` blurred with ``sigma`` (default: 1/16 of the shorter side, 14 px at 224);
    - ``constant``: grey level ``value`` in [0, 1] (before the classifier's normalisation);
    - ``mean``: each image's mean colour.
    """
    if kind == "noise":
        gdev = generator.device if generator is not None else x01.device
        return torch.rand(x01.shape, generator=generator, device=gdev, dtype=x01.dtype).to(x01.device)
    if kind == "blur":
        s = sigma if sigma is not None else min(x01.shape[-2:]) / 16.0
        return blur(x01, s)
    if kind == "constant":
        return torch.full_like(x01, float(value))
    if kind == "mean":
        return x01.mean(dim=(2, 3), keepdim=True).expand_as(x01).clone()
    from ..errors import ExplainerError

    raise ExplainerError(f"unknown reference {kind!r}; choose one of {', '.join(KINDS)}")
