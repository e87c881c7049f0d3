"""Small engine helpers for the teaching tour: the experiments the papers run on their figures,
re-done on one built-in image.

- :func:`remove_evidence` — the PMI paper's Fig. 10: remove a growing portion of the opposing
  (negative) evidence of a PMI map and follow the class probability (it should rise); removing
  the supporting evidence is the control (it should fall).
- :func:`corrupt` — a corrupted copy of an image, in the spirit of ImageNet-C (VarSal's Fig. 7
  uses "brightness" and "motion blur" at severity 5): ``brightness``, ``motion-blur``, ``noise``.

Plain PyTorch + NumPy, pixel space [0, 1]; randomness only from a seeded ``torch.Generator``.
"""
from __future__ import annotations

from typing import Any, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import ExplainerError
from .methods.references import KINDS, reference

ArrayLike = Union[np.ndarray, torch.Tensor]
CORRUPTIONS = ("brightness", "motion-blur", "noise")
EVIDENCE = ("opposing", "supporting")


def _x4(x01: torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(x01).detach().float()
    x = x[None] if x.dim() == 3 else x
    if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise ExplainerError(f"expected one pixel image (3, H, W), got shape {tuple(x01.shape)}")
    return x


def evidence_order(saliency: ArrayLike, evidence: str = "opposing") -> np.ndarray:
    """Flat pixel indices of the ``evidence`` pixels, strongest first.

    ``opposing``: pixels with a negative value, most negative first; ``supporting``: positive
    values, largest first. Ties are broken by pixel index (stable sort), so the order is fixed.
    """
    if evidence not in EVIDENCE:
        raise ExplainerError(f"evidence must be one of {', '.join(EVIDENCE)}, got {evidence!r}")
    s = np.asarray(saliency.detach().cpu() if isinstance(saliency, torch.Tensor) else saliency, dtype=np.float64)
    if s.ndim != 2 or not np.all(np.isfinite(s)):
        raise ExplainerError(f"a saliency map must be a finite (H, W) array, got shape {s.shape}")
    flat = s.ravel()
    signed = -flat if evidence == "opposing" else flat
    idx = np.flatnonzero(signed > 0)
    return idx[np.argsort(-signed[idx], kind="stable")]


def remove_evidence(
    clf: Any,
    x01: torch.Tensor,
    saliency: ArrayLike,
    target: int,
    fractions: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    evidence: str = "opposing",
    reference_kind: str = "blur",
    value: float = 0.5,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """The probability of ``target`` as a growing portion of one sign of evidence is removed.

    The PMI paper's Fig. 10 removes "portions of negative evidences" and reports that the top-1
    probability rises. Here the ``evidence`` pixels of ``saliency`` (e.g. a PMI map, see
    :func:`evidence_order`) are ranked strongest first and, for each fraction f, the first
    ⌈f·n⌉ of them are replaced by a reference image (:func:`explainers.methods.references.reference`:
    ``blur`` — the image blurred, σ = side/16 — by default, or ``mean``, ``constant``, ``noise``).

    Returns ``fractions`` (S,), ``pixels`` (S,) — how many pixels were removed —, ``probability``
    (S,) of ``target``, ``images`` (S, 3, H, W) in [0, 1] and ``count`` (the number of evidence
    pixels). With no pixels of that sign every entry equals the original image's.
    """
    if reference_kind not in KINDS:
        raise ExplainerError(f"reference must be one of {', '.join(KINDS)}, got {reference_kind!r}")
    x = _x4(x01).to(clf.device)
    h, w = x.shape[-2:]
    order = evidence_order(saliency, evidence)
    if np.shape(saliency) != (h, w):
        raise ExplainerError(f"the map has shape {np.shape(saliency)}, the image {(h, w)}")
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or fr.size == 0 or np.any(fr < 0) or np.any(fr > 1):
        raise ExplainerError("fractions must be numbers in [0, 1]")
    gen = torch.Generator(device=x.device).manual_seed(int(seed))
    ref = reference(reference_kind, x, generator=gen, value=value)
    n = len(order)
    counts = np.ceil(fr * n - 1e-9).astype(np.int64)
    keep = torch.ones(len(fr), h * w, device=x.device)
    for i, c in enumerate(counts):
        keep[i, torch.as_tensor(order[:c], device=x.device)] = 0.0
    keep = keep.view(len(fr), 1, h, w)
    images = keep * x + (1 - keep) * ref
    probs = clf.probabilities(images)[:, int(target)]
    return {
        "fractions": fr,
        "pixels": counts,
        "probability": probs.detach().cpu().double().numpy(),
        "images": images.detach().cpu().numpy().astype(np.float32),
        "count": np.int64(n),
    }


def corrupt(image: Image.Image, kind: str = "noise", severity: int = 5, seed: int = 0) -> Image.Image:
    """A corrupted copy of an RGB image, severity 1 (mild) to 5 (strong), as ImageNet-C's levels.

    - ``brightness``: every pixel brightened by 0.1·severity (clipped at white);
    - ``motion-blur``: a horizontal box blur 2·severity + 1 pixels long (reflect padding);
    - ``noise``: Gaussian noise of s.d. 0.04·severity, drawn from a generator seeded with ``seed``.

    The image keeps its size; the result is 8-bit again (it is an image, not a tensor).
    """
    if kind not in CORRUPTIONS:
        raise ExplainerError(f"corruption must be one of {', '.join(CORRUPTIONS)}, got {kind!r}")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= 5:
        raise ExplainerError(f"severity must be an integer from 1 to 5, got {severity!r}")
    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1)[None]
    if kind == "brightness":
        y = x + 0.1 * severity
    elif kind == "motion-blur":
        k = 2 * int(severity) + 1
        r = k // 2
        mode = "reflect" if r < x.shape[-1] else "replicate"
        y = F.avg_pool2d(F.pad(x, (r, r, 0, 0), mode=mode), kernel_size=(1, k), stride=1)
    else:
        gen = torch.Generator().manual_seed(int(seed))
        y = x + 0.04 * severity * torch.randn(x.shape, generator=gen)
    out = (y.clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(out, "RGB")


__all__ = ["CORRUPTIONS", "EVIDENCE", "corrupt", "evidence_order", "remove_evidence"]
