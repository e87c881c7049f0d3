"""VarSal's amortised encoder (paper 002, Appendix C) and loading a fitted one."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ... import fitted
from ...classifiers.base import Classifier
from ...errors import ExplainerError
from .config import FIT_NAME

PAPER_CHANNELS = (64, 64, 64, 64, 32, 32, 32, 32, 32, 16, 16, 16, 16, 16, 16, 2)


@dataclass(frozen=True)
class EncoderConfig:
    """Appendix C's encoder: 3x3 convolutions (stride 1, padding 1, no pooling, so the map has the
    input's size), each followed by batch norm and ReLU, with output channels ``channels``; the last
    gives μ and η = log ν.

    Reading of the paper: Appendix C says "17 convolution layers" but lists 16 channel counts, and
    Section 4.1 says 16 layers; we build the 16 listed. The last layer has no BN/ReLU (μ is signed and
    log ν is any real number, so a ReLU there cannot be meant). ``width`` scales every hidden
    channel count (not the final 2) so the encoder fits a 2-core CPU's budget (see the fitted card).
    ``stride`` = 1 is the paper (map at the input's resolution); ``stride`` = 2 makes the first
    convolution stride 2, so the map comes out at half resolution and is upsampled bilinearly —
    see ``explainers/training/varsal.py`` for why the committed fits use it.
    """

    channels: tuple[int, ...] = PAPER_CHANNELS
    width: float = 1.0
    in_channels: int = 3
    stride: int = 1

    def __post_init__(self) -> None:
        if len(self.channels) < 2 or self.channels[-1] != 2:
            raise ExplainerError("encoder channels must end with 2 (μ and log ν)")
        if not self.width > 0:
            raise ExplainerError("encoder width must be positive")
        if int(self.stride) not in (1, 2, 4):
            raise ExplainerError("encoder stride must be 1, 2 or 4")

    def hidden(self) -> list[int]:
        return [max(1, int(round(c * self.width))) for c in self.channels[:-1]]


class Encoder(nn.Module):
    """x01 (B, 3, H, W) in [0, 1] -> (μ, log ν), each (B, H/stride, W/stride) (rounded up)."""

    LOG_NU_RANGE = (-12.0, 6.0)  # clamp for numerical safety only (ν from 6e-6 to 400)

    def __init__(self, cfg: EncoderConfig = EncoderConfig()):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        c = cfg.in_channels
        for i, co in enumerate(cfg.hidden()):
            stride = int(cfg.stride) if i == 0 else 1
            layers += [nn.Conv2d(c, co, 3, stride, 1, bias=False), nn.BatchNorm2d(co), nn.ReLU(inplace=True)]
            c = co
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(c, 2, 3, 1, 1)
        # start near the prior: μ ≈ 0, ν ≈ the prior's best mean-field variance (≈ 0.36 for α = 0.4)
        with torch.no_grad():
            self.head.weight.mul_(0.1)
            self.head.bias.copy_(torch.tensor([0.0, math.log(0.36)]))

    def forward(self, x01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(self.body((x01 - 0.5) / 0.25))
        return out[:, 0], out[:, 1].clamp(*self.LOG_NU_RANGE)


# ---------------------------------------------------------------------------------------------
# loading a fitted encoder


def fitted_path(clf: Classifier) -> Optional[Path]:
    """The user's fit for ``clf`` if there is one, else the committed one, else None."""
    return fitted.find(clf.id, f"{FIT_NAME}.safetensors")


def _build_encoder(card: dict) -> Encoder:
    ec = card["config"]["encoder"]
    return Encoder(EncoderConfig(channels=tuple(ec["channels"]), width=float(ec["width"]), in_channels=int(ec["in_channels"]), stride=int(ec.get("stride", 1))))


def load_encoder(path: str | Path, device: torch.device | str) -> tuple[Encoder, dict]:
    """A fitted encoder (eval mode, frozen) and its card, loaded once per (path, device, file
    version: a refit in place is picked up); never mutate it."""
    p = Path(path).expanduser().resolve()
    if not p.exists() or not p.with_suffix(".json").exists():
        raise ExplainerError(f"no fitted VarSal encoder at {p} (needs the .safetensors and the .json beside it)")
    return fitted.load_frozen(p, device, _build_encoder)


def upsample(a: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(n, h, w) -> (n, H, W), bilinear (half-pixel centres); unchanged when already that size."""
    if tuple(a.shape[-2:]) == tuple(size):
        return a
    return F.interpolate(a.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


@torch.inference_mode()
def encode(enc: Encoder, x01: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The amortised posterior for a batch (B, 3, H, W): (μ, √ν), each (B, H, W) at ``size``."""
    mu, log_nu = enc(x01)
    return upsample(mu, size), upsample((0.5 * log_nu).exp(), size)
