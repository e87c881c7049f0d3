"""VarSal's config: the objective's knobs (paper 002, Section 4.1, Appendix C) and the per-image mode's."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from ...config import knob
from ...errors import ExplainerError
from .. import softtv

BASELINES = ("blur", "noise", "mean")
MODES = ("auto", "amortised", "per-image")
FIT_NAME = "varsal"
# grid=auto: the per-image map at full resolution (the paper's "no upsampling", Section 4.2) from this
# input side up, SMALL_GRID cells a side below. Measured (issue 24): at 224 px on EfficientNet-Lite0
# full resolution's top 10% removed 0.327 of the top-1 probability on coffee, chelsea and rocket
# against 0.174 with 32 cells; at 64 px on shapes-resnet (20 test images) full resolution pointed at
# the object less often (0.50 against 0.65) and dropped less (0.50 against 0.58). The threshold lies
# between the two measured sizes.
FULL_RES_SIDE = 128
SMALL_GRID = 32
# the objective's fields, which the encoder's fitter trains with (``training.varsal.TrainConfig.method``)
TRAINING_FIELDS = ("alpha", "beta", "baseline", "k_min", "k_max", "topk_eps", "sinkhorn_iters", "blur_sigma", "noise_std")
# those that define the optimum: a fitted encoder is used only when they all match its training
OBJECTIVE_FIELDS = tuple(f for f in TRAINING_FIELDS if f != "sinkhorn_iters")


@dataclass(frozen=True)
class VarSalConfig:
    """VarSal's knobs; defaults are the paper's where it gives them (Section 4.1, Appendix C).

    The noise baseline's scale (``noise_std``) is ours: the paper gives none (see
    :func:`explainers.methods.varsal.objective.baselines`). The per-image mode is ours too (the
    paper has only the encoder): free per-pixel parameters at 64x64 came out as salt-and-pepper
    noise in the time budget (each pixel's gradient is as noisy as a vanilla gradient map), so below
    ``FULL_RES_SIDE`` px the map is optimised on a grid of at most 32 cells a side (64x64 inputs:
    2x2-pixel cells, like the committed encoders; 28x28: full resolution) and upsampled bilinearly;
    32 cells put the maximum on the object for 67% of 12 test images vs 58% at 16. From
    ``FULL_RES_SIDE`` up (224 px ImageNet inputs) it is full resolution, as the paper's posterior:
    there the noisier full-resolution map removed the class better than 7x7-pixel cells (see
    ``FULL_RES_SIDE``). ``grid`` set to a number caps the cells a side for any input.
    """

    mode: str = knob("auto", "auto: the fitted encoder when there is one and the objective's settings are the ones it "
                     "was trained with, else per-image; amortised: the encoder (an error without one); per-image: "
                     "optimise μ and log ν for this image (default auto)", choices=MODES)
    alpha: float = knob(0.4, "soft-TV prior correlation α between neighbours (Eq. 4, 6; paper 0.4); 0 = N(0, I); "
                        "must be < 0.5", min=0.0, max=0.49, step=0.01, symbol="α")
    beta: Optional[float] = knob(None, "weight β of the prior KL (Eq. 5); auto = 1/(10·h·w) (Section 4.1)",
                                 min=0.0, symbol="β", auto="auto")
    baseline: str = knob("random", "x̄ of Eq. 2, what replaces the pixels outside the top-k: blur, noise or mean "
                         "drawn at random per sample (Section 4.1; default random), or one of them always",
                         choices=("random",) + BASELINES, symbol="x̄")
    k_min: float = knob(0.1, "k ~ U(k_min·hw, k_max·hw): lower end (Section 4.1: 0.1)", min=0.01, max=0.99, step=0.01,
                        symbol="k_min", advanced=True)
    k_max: float = knob(0.9, "k ~ U(k_min·hw, k_max·hw): upper end (Section 4.1: 0.9)", min=0.01, max=0.99, step=0.01,
                        symbol="k_max", advanced=True)
    topk_eps: float = knob(0.05, "entropy weight ε of the SOFT top-k, relative to each map's score range (default 0.05)",
                           min=0.001, max=1.0, step=0.001, symbol="ε", advanced=True)
    sinkhorn_iters: int = knob(200, "at most this many Sinkhorn iterations of the SOFT top-k (stops at tolerance 1e-4; "
                               "default 200)", min=1, max=2000, step=10, advanced=True)
    blur_sigma: Optional[float] = knob(None, "σ in pixels of the blurred baseline; auto = 1/16 of the image side",
                                       min=0.1, symbol="σ", auto="auto", advanced=True)
    noise_std: float = knob(0.1, "s.d. of the Gaussian noise of the noise and mean baselines (notes 2, 3: no scale "
                            "given; ours 0.1)", min=0.0, max=1.0, step=0.01, advanced=True)
    steps: int = knob(150, "per-image: Adam steps on μ and log ν, learning rate cosine-decayed to 0 (default 150)",
                      min=1, max=2000, step=10)
    lr: float = knob(0.1, "per-image: Adam's initial learning rate (default 0.1)", min=0.001, max=1.0, step=0.001,
                     advanced=True)
    n_mc: int = knob(8, "per-image: Monte-Carlo samples (z, k, x̄) per step (default 8)", min=1, max=64, step=1)
    batch_size: int = knob(8, "per-image: samples forwarded at a time (halved on CUDA out-of-memory; the result does "
                           "not depend on it; default 8)", min=1, max=256, step=1, advanced=True)
    grid: Optional[int] = knob(None, "per-image: the map is optimised on at most this many cells a side, then "
                               f"upsampled bilinearly; auto = full resolution (the paper's) for inputs of {FULL_RES_SIDE} px "
                               f"a side or more, {SMALL_GRID} cells below", min=2, max=1024, step=1, auto="auto",
                               advanced=True)
    n_samples: int = knob(4, "posterior samples returned beside the maps (Fig. 6; default 4)", min=0, max=16, step=1)
    seed: int = knob(0, "seeds every random draw (default 0)", min=0, step=1)
    encoder: Optional[str] = knob(None, "path to fitted encoder weights; auto = the user's fit for the classifier, "
                                  "else the committed one", auto="auto", advanced=True)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ExplainerError(f"mode must be auto, amortised or per-image, got {self.mode!r}")
        softtv.check_alpha(self.alpha)
        if self.beta is not None and not (self.beta >= 0 and math.isfinite(self.beta)):
            raise ExplainerError(f"beta must be a non-negative number (or None for 1/(10hw)), got {self.beta}")
        if self.baseline not in ("random",) + BASELINES:
            raise ExplainerError(f"baseline must be random, {', '.join(BASELINES)}; got {self.baseline!r}")
        if not (0.0 < self.k_min <= self.k_max < 1.0):
            raise ExplainerError(f"need 0 < k_min <= k_max < 1, got k_min={self.k_min}, k_max={self.k_max}")
        if not self.topk_eps > 0:
            raise ExplainerError(f"topk_eps must be positive, got {self.topk_eps}")
        for name in ("sinkhorn_iters", "steps", "n_mc", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ExplainerError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.grid is not None and not (isinstance(self.grid, (int, float)) and self.grid >= 2):
            raise ExplainerError(f"grid must be at least 2 (or None for auto), got {self.grid!r}")
        if not (self.lr > 0):
            raise ExplainerError(f"lr must be positive, got {self.lr}")
        if self.n_samples < 0:
            raise ExplainerError(f"n_samples must be >= 0, got {self.n_samples}")
        if self.blur_sigma is not None and not self.blur_sigma > 0:
            raise ExplainerError(f"blur_sigma must be positive, got {self.blur_sigma}")
        if not self.noise_std >= 0:
            raise ExplainerError(f"noise_std must be >= 0, got {self.noise_std}")

    def beta_for(self, h: int, w: int) -> float:
        return 1.0 / (10.0 * h * w) if self.beta is None else float(self.beta)
