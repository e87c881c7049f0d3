"""How good is a sampler on these images? Likelihood and roughness of its in-fills.

Every non-overlapping K×K patch of every image (offsets 0, K, 2K, … with the patch inside the
image) is hidden and conditioned on its 3K×3K neighbourhood's known pixels, as ``pmi-ig`` does:

- **NLL**, bits per subpixel (pixel and channel, in the sampler's channels: one for a grey-level
  fit): ``patchsampler`` exactly (its probabilities of the 8-bit levels); ``gaussian`` its
  conditional Gaussian's density times one grey level (1/255 of [0, 1]: the density discretised
  to the 256 levels; its clamping to [0, 1] when drawing is ignored); ``noise`` 8 (uniform over
  256 levels); the deterministic samplers have none (None).
- **roughness**: the mean absolute difference of horizontally and vertically neighbouring pixels
  inside one in-fill per patch, in grey levels (0 … 255, averaged over R, G, B), against the same
  of the real patches (``real_roughness``). Speckled in-fills are rougher than real ones; flat
  ones smoother.

Images are used at their own size, except for fits made on photographs or a folder, whose
pictures were fitted at a shorter side of 256 px (the card's ``short_side``): they are resized
the same way first. ``python -m explainers sampler-nll`` prints the result.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ...errors import ExplainerError
from ...progress import report
from .fits import find_fitted
from .geometry import known, neighbourhoods
from .infill import PatchSampler, GaussianSampler, make_sampler
from .network import LEVELS

CHUNK = 256  # patches per sampler forward
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def image_files(root: str | Path) -> list[Path]:
    """Image files under ``root`` (recursive, sorted; hidden files and ``*.mask.png`` skipped)."""
    p = Path(root).expanduser()
    if not p.is_dir():
        raise ExplainerError(f"{root}: not a folder")
    files = sorted(
        f for f in p.rglob("*")
        if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.lower().endswith(".mask.png")
        and not any(part.startswith(".") for part in f.relative_to(p).parts)
    )
    if not files:
        raise ExplainerError(f"{root}: no images found ({', '.join(IMAGE_EXTENSIONS)}; *.mask.png skipped)")
    return files


def fit_short_side(fit: str, K: int) -> Optional[int]:
    """The shorter side the fit's pictures were used at (None: their own size)."""
    for kind in ("patchsampler", "gaussian"):
        try:
            card = json.loads(find_fitted(kind, fit, K).with_suffix(".json").read_text())
        except ExplainerError:
            continue
        return card.get("short_side")
    return None


def load_images(files: list[Path], short_side: Optional[int] = None) -> list[np.ndarray]:
    """uint8 (H, W, 3) arrays, resized so the shorter side is ``short_side`` when given."""
    from PIL import Image

    from ...data.images import load_image

    out = []
    for f in files:
        img = load_image(str(f))
        if short_side:
            w, h = img.size
            s = short_side / min(w, h)
            img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
        out.append(np.asarray(img, dtype=np.uint8))
    return out


def _roughness(x255: torch.Tensor) -> tuple[float, int]:
    """Sum of |neighbour differences| (averaged over channels) and the number of pairs, (P, 3, K, K)."""
    g = x255.double().mean(1) if x255.shape[1] > 1 else x255.double()[:, 0]
    dh, dv = (g[:, :, 1:] - g[:, :, :-1]).abs(), (g[:, 1:] - g[:, :-1]).abs()
    return float(dh.sum() + dv.sum()), dh.numel() + dv.numel()


@torch.no_grad()
def measure(images: list[np.ndarray], sampler: str, fit: str = "photos", K: int = 8, seed: int = 0,
            device: str | torch.device = "cpu", value: float = 0.5, progress: Optional[Callable] = None,
            temperature: float = 1.0) -> dict:
    """NLL (bits per subpixel or None), roughness, real_roughness and patches of ``sampler`` on ``images``.
    ``temperature`` (the PatchSampler's) changes the in-fills, so the roughness, never the NLL: the
    likelihood is the fitted model's, at T = 1. The default here is 1 (the model as fitted), not
    ``pmi-ig``'s 0.8, so the numbers measured before the knob existed stay reproducible."""
    dev = torch.device(device)
    s = make_sampler(sampler, K, dev, fit, value, temperature=temperature)
    bits, subpixels, rough, real, pairs, patches = 0.0, 0, 0.0, 0.0, 0, 0
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    for i, im in enumerate(images):
        h, w = im.shape[:2]
        ys, xs = np.arange(0, h - K + 1, K), np.arange(0, w - K + 1, K)
        if not len(ys) or not len(xs):
            continue
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        y0, x0 = torch.as_tensor(yy.ravel(), device=dev), torch.as_tensor(xx.ravel(), device=dev)
        x01 = torch.as_tensor(np.array(im[..., :3], dtype=np.uint8), device=dev).permute(2, 0, 1)[None].float() / (LEVELS - 1)
        for lo in range(0, len(y0), CHUNK):
            cy, cx = y0[lo : lo + CHUNK], x0[lo : lo + CHUNK]
            neigh, kn = neighbourhoods(x01, cy, cx, K), known(h, w, cy, cx, K, dev)
            truth = neigh[:, :, K : 2 * K, K : 2 * K] * (LEVELS - 1)
            lp = _log_prob(s, neigh, kn, truth)
            if lp is not None:
                bits -= float(lp[0].sum()) / math.log(2)
                subpixels += lp[1]
            fill = s.fill(neigh, kn, s.draws(len(cy), 1, gen), 1)[:, 0] * (LEVELS - 1)
            r, n = _roughness(fill.round())
            rr, _ = _roughness(truth.round())
            rough, real, pairs, patches = rough + r, real + rr, pairs + n, patches + len(cy)
        report(progress, i + 1, len(images), "images")
    if not patches:
        raise ExplainerError(f"no image is at least K={K} pixels on its shorter side")
    nll = None
    if sampler == "noise":
        nll = math.log2(LEVELS)
    elif subpixels:
        nll = bits / subpixels
    return {"bits_per_subpixel": nll, "roughness": rough / pairs, "real_roughness": real / pairs, "patches": patches}


def _log_prob(s, neigh: torch.Tensor, kn: torch.Tensor, truth255: torch.Tensor) -> Optional[tuple[torch.Tensor, int]]:
    """(ln p of each patch (P,), subpixels counted) under a fitted sampler, else None."""
    if isinstance(s, PatchSampler):
        net = s.net
        x = net.to_input(truth255.round())
        x = x.round() if net.channels == 1 else x
        lp = net.log_prob(net.trunk(net.to_input(neigh), kn), x * 2 / (LEVELS - 1) - 1)
        return lp.sum((1, 2)).double(), x.numel()
    if isinstance(s, GaussianSampler):
        g = s.model
        ld = g.log_density(neigh.double(), kn[:, 0])
        da = g.channels * s.K * s.K
        return ld - da * math.log(LEVELS - 1), da * neigh.shape[0]  # density × one grey level
    return None
