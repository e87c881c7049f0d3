"""The classifier object every explainer receives.

A :class:`Classifier` bundles a network in eval mode (returning logits), the preprocessing that
turns a PIL image into the tensor it expects, its labels and its input size. The network is shared
by every caller (the app caches one per process): explainers must never change it — no
``requires_grad_``, no ``.train()``, no hooks left behind.

Explainers that perturb pixels work in *pixel space*: a float tensor in [0, 1], shape (B, 3, H, W)
at ``input_size``. ``pixels(image)`` gives it, ``logits01(x)`` normalises and runs the network.
"""
from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from PIL import Image
from torch import nn


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None) picks CUDA when there is one, the CPU otherwise."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from ..errors import ExplainerError

        raise ExplainerError("CUDA was asked for but no GPU is available; use device='cpu' or 'auto'")
    return dev


@dataclass(eq=False)
class Classifier:
    id: str
    net: nn.Module
    labels: list[str]
    input_size: tuple[int, int]  # (H, W)
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    grayscale: bool = False  # the network takes one channel (digits); pixel space is still RGB
    resize: Optional[int] = None  # torchvision style: resize shorter side, then centre-crop
    dataset: Optional[str] = None  # built-in dataset it was trained on, if any
    family: str = "embedded"  # embedded | torchvision | user
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    # -- device -------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        try:
            return next(self.net.parameters()).device
        except StopIteration:  # pragma: no cover - parameter-free nets
            return torch.device("cpu")

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def weights_digest(self) -> str:
        """A digest of the network's state dict (parameters and buffers, bytes in key order), for
        cache keys. Hashed once, and again only when a tensor is replaced or written in place (torch's
        version counters move on ``no_grad`` writes, ``load_state_dict`` and optimiser steps; a write
        through ``.data`` bypasses them, so change weights without ``.data``)."""
        try:
            state = self.net.state_dict(keep_vars=True)
        except TypeError:  # pragma: no cover - modules without keep_vars
            state = self.net.state_dict()
        try:
            stamp = [(k, weakref.ref(t), t.data_ptr(), t._version) for k, t in state.items()]
        except RuntimeError:  # inference-mode tensors keep no version counter: hash every time
            stamp = None
        cached = self.__dict__.get("_weights_digest")
        if stamp and cached and cached[0] is self.net and cached[1] and _same_stamp(cached[1], stamp):
            return cached[2]
        h = hashlib.sha256()
        for k, t in state.items():
            h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(_tensor_bytes(t))
        digest = h.hexdigest()[:16]
        self.__dict__["_weights_digest"] = (self.net, stamp, digest)
        return digest

    # -- preprocessing --------------------------------------------------------------------------
    def pixels(self, image: Image.Image) -> torch.Tensor:
        """PIL image -> float tensor (3, H, W) in [0, 1] at ``input_size`` (on the CPU)."""
        from ..data.images import to_rgb

        img = to_rgb(image)
        h, w = self.input_size
        if self.resize is not None:
            # torchvision's recipe: resize the shorter side, centre-crop to the input size.
            s = self.resize
            iw, ih = img.size
            if iw <= ih:
                nw, nh = s, max(s, round(ih * s / iw))
            else:
                nh, nw = s, max(s, round(iw * s / ih))
            img = img.resize((nw, nh), Image.BILINEAR)
            left, top = (nw - w) // 2, (nh - h) // 2
            img = img.crop((left, top, left + w, top + h))
        elif img.size != (w, h):
            img = img.resize((w, h), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.float32) / 255.0
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        """Pixel space (B, 3, H, W) in [0, 1] -> the network's input."""
        if self.grayscale:
            x01 = x01.mean(dim=1, keepdim=True)
            mean = torch.tensor(self.mean[:1], device=x01.device, dtype=x01.dtype).view(1, 1, 1, 1)
            std = torch.tensor(self.std[:1], device=x01.device, dtype=x01.dtype).view(1, 1, 1, 1)
        else:
            mean = torch.tensor(self.mean, device=x01.device, dtype=x01.dtype).view(1, 3, 1, 1)
            std = torch.tensor(self.std, device=x01.device, dtype=x01.dtype).view(1, 3, 1, 1)
        return (x01 - mean) / std

    def transform(self, image: Image.Image) -> torch.Tensor:
        """PIL image -> normalised tensor (C, H, W), the public interface's ``.transform``."""
        return self.normalize(self.pixels(image).unsqueeze(0))[0]

    # -- inference ------------------------------------------------------------------------------
    def logits01(self, x01: torch.Tensor) -> torch.Tensor:
        """Logits for pixel-space input (B, 3, H, W); differentiable w.r.t. ``x01``."""
        return self.net(self.normalize(x01))

    @torch.no_grad()
    def probabilities(self, x01: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Softmax probabilities for pixel-space input, batched; no gradients."""
        out = []
        for i in range(0, x01.shape[0], batch_size):
            xb = x01[i : i + batch_size].to(self.device)
            out.append(torch.softmax(self.logits01(xb).float(), dim=1))
        return torch.cat(out)

    def predict(self, image: Image.Image, topk: int = 5) -> list[tuple[int, str, float]]:
        """Top-k (index, label, probability) for a PIL image."""
        p = self.probabilities(self.pixels(image).unsqueeze(0))[0].cpu()
        k = min(topk, p.numel())
        vals, idx = p.topk(k)
        return [(int(i), self.labels[int(i)], float(v)) for v, i in zip(vals, idx)]

    def label_index(self, target: int | str | None, x01: Optional[torch.Tensor] = None) -> int:
        """Resolve a class given by index or label; None means the top-1 class of ``x01``."""
        from ..errors import ExplainerError

        if target is None:
            if x01 is None:
                raise ExplainerError("a target class is needed")
            return int(self.probabilities(x01[None] if x01.dim() == 3 else x01)[0].argmax())
        if isinstance(target, str) and not target.lstrip("-").isdigit():
            if target in self.labels:
                return self.labels.index(target)
            low = [lab.lower() for lab in self.labels]
            if target.lower() in low:
                return low.index(target.lower())
            raise ExplainerError(f"unknown class {target!r} for model {self.id}")
        t = int(target)
        if not 0 <= t < self.num_classes:
            raise ExplainerError(f"class index {t} out of range 0..{self.num_classes - 1} for model {self.id}")
        return t


def _same_stamp(old: list, new: list) -> bool:
    return len(old) == len(new) and all(
        a[0] == b[0] and a[1]() is b[1]() is not None and a[2:] == b[2:] for a, b in zip(old, new)
    )


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach()
    if t.is_quantized:  # pragma: no cover - no quantized model in the zoo
        t = t.dequantize()
    t = t.to("cpu").contiguous().reshape(-1)
    try:
        return t.view(torch.uint8).numpy().tobytes()
    except (RuntimeError, TypeError):  # pragma: no cover - exotic dtypes: their float64 values
        return t.double().numpy().tobytes()


@dataclass(frozen=True)
class ClassifierEntry:
    """One row of ``list_classifiers()``: what can be loaded, and why not when it cannot."""

    id: str
    title: str
    family: str  # embedded | torchvision
    available: bool
    reason: str  # empty when available; otherwise one line saying how to make it available
    dataset: Optional[str] = None
    input_size: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)
