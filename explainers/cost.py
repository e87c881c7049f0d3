"""Cost before work: what a run of a method will cost, in classifier passes and in seconds.

:func:`estimate` reads a method's config (and, for the amortised methods, whether their fit
exists) and counts the classifier passes a run will make, without running it:

- ``forwards``: images through the classifier without a gradient (batched);
- ``passes``: images through the classifier forward *and* backward (small batches: an
  optimisation step, a gradient map).

:func:`forwards_per_second` measures one classifier on its device once (a few timed batched
forwards and one forward+backward; cached per classifier id, device and input size), and
``Cost.seconds(rates)`` turns the counts into an expected duration. The counts follow each
method's ``run`` (see the comments below); work that is not a classifier pass (PMI's in-fills,
the samplers' networks, Sinkhorn) is left out, so the seconds are a lower bound that is close for
networks whose forward dominates. A run that would fail before doing any work (a fitted part that
is missing, a network MIP-IN cannot invert) is told in ``Cost.blocked``, one line naming the fix.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

import torch

from .classifiers.base import Classifier
from .core import get_method, make_config
from .errors import ExplainerError, one_line

FORWARD_BATCH = 8  # images per timed forward: PMI, occlusion and RISE forward in batches
BACKWARD_BATCH = 2  # images per timed forward+backward: DSSR+ steps on 2, the controller on 4
LARGE_BATCH = 64  # for a network whose batch of FORWARD_BATCH takes under SMALL_SECONDS (per-call overheads)
SMALL_SECONDS = 0.05
SMALL_INPUT = 96 * 96  # pixels: inputs this small always count as small (a busy machine can slow the first batch)
MIN_SECONDS = 0.25  # time forwards for at least this long (at least one batch)
BACKWARD_REPEATS = 5  # timed forward+backward passes (one when a pass takes longer than MIN_SECONDS)


@dataclass(frozen=True)
class Rates:
    """A classifier's measured throughput on its device, in images per second."""

    forward: float  # batched forwards without a gradient
    backward: float  # forward + backward, small batches
    device: str = "cpu"


@dataclass(frozen=True)
class Cost:
    """The classifier passes a run will make (see the module's docstring)."""

    forwards: int = 0
    passes: int = 0
    amortised: bool = False  # a fitted network does the work in about one pass
    detail: str = ""  # how the counts come about, for a user: "225 patches × 8 in-fills"
    blocked: str = ""  # why a run would fail at once (one line with the fix), "" when it would run

    @property
    def work(self) -> str:
        parts = [f"{self.forwards:,} forwards" if self.forwards else "", f"{self.passes:,} forward+backward passes" if self.passes else ""]
        return " + ".join(p for p in parts if p) or "no classifier passes"

    def seconds(self, rates: Rates) -> float:
        return self.forwards / max(rates.forward, 1e-9) + self.passes / max(rates.backward, 1e-9)


_RATES: dict[tuple, Rates] = {}
_LOCK = threading.Lock()


def _key(clf: Classifier) -> tuple:
    return (clf.id, str(clf.device), tuple(clf.input_size))


def measured(clf: Classifier) -> bool:
    """Whether :func:`forwards_per_second` has measured ``clf`` on its device already."""
    return _key(clf) in _RATES


def forwards_per_second(clf: Classifier, refresh: bool = False) -> Rates:
    """Measure ``clf`` on its device once (cached per classifier id, device and input size): batches
    of ``FORWARD_BATCH`` random images (``LARGE_BATCH`` for a small network or input, whose small
    batches are dominated by per-call costs) timed for at least ``MIN_SECONDS`` after a warm-up, and a few
    forward+backward passes of ``BACKWARD_BATCH`` images after a warm-up (the fastest of each). The
    model is not changed (the gradient is taken w.r.t. the input only)."""
    key = _key(clf)
    with _LOCK:
        if key in _RATES and not refresh:
            return _RATES[key]
        h, w = clf.input_size
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(FORWARD_BATCH, 3, h, w, generator=gen).to(clf.device)
        sync = torch.cuda.synchronize if clf.device.type == "cuda" else (lambda: None)
        with torch.no_grad():
            clf.logits01(x[:1])  # warm-up (first-call allocations, lazy kernels)
            sync()
            t = time.perf_counter()
            clf.logits01(x)
            sync()
            small = h * w <= SMALL_INPUT or time.perf_counter() - t < SMALL_SECONDS
            if small:  # a small network or input: time the batches PMI and RISE use
                x = torch.rand(LARGE_BATCH, 3, h, w, generator=gen).to(clf.device)
                clf.logits01(x)
                sync()
            fwd: list[float] = []
            while sum(fwd) < MIN_SECONDS or not fwd:
                t = time.perf_counter()
                clf.logits01(x)
                sync()
                fwd.append(time.perf_counter() - t)
        xb = x[:BACKWARD_BATCH].clone().requires_grad_(True)
        bwd: list[float] = []
        for _ in range(BACKWARD_REPEATS + 1):  # a warm-up, then the timed ones
            t = time.perf_counter()
            clf.logits01(xb).float().sum().backward()
            sync()
            bwd.append(time.perf_counter() - t)
            if len(bwd) > 1 and bwd[0] > MIN_SECONDS:  # a slow network: one timed pass after the warm-up
                break
        # the fastest pass: on a shared machine a short measurement catches the other processes' bursts
        # (small batches on two threads then stall for whole time slices), which a long run averages out
        rates = Rates(forward=len(x) / min(fwd), backward=BACKWARD_BATCH / min(bwd[1:] or bwd), device=str(clf.device))
        _RATES[key] = rates
        return rates


def _config(method: str, config: Any):
    spec = get_method(method)
    if config is None:
        return spec.config()
    if isinstance(config, spec.config):
        return config
    return make_config(method, **dict(config))


def estimate(clf: Classifier, method: str, config: Any = None) -> Cost:
    """What a run of ``method`` with ``config`` (a config object, a dict of its fields, or None for
    the defaults) on ``clf`` will cost. Raises ``ExplainerError`` for a bad config only; a run that
    would fail for want of a fit is told in ``Cost.blocked``."""
    cfg = _config(method, config)
    fn = _ESTIMATES.get(method)
    cost = fn(clf, cfg) if fn is not None else Cost(forwards=1, detail="no cost model for this method: about one pass")
    # explain() itself: one forward for the probabilities (and the top class)
    return dataclasses.replace(cost, forwards=cost.forwards + 1)


# ------------------------------------------------------------------------------------ per method


def _pmi(clf: Classifier, cfg) -> Cost:
    # run(): P patches (stride S, the last row/column moved to the border) × N in-fills, one forward
    # each (N = 1 for the deterministic samplers), and one forward of the image itself
    from .methods.samplers import STOCHASTIC, find_fitted, patch_boxes, sampler_key

    h, w = clf.input_size
    if cfg.K > min(h, w) or cfg.stride > cfg.K:
        return Cost(blocked=f"pmi-ig: K={cfg.K} must be at most the image side {min(h, w)} and at least the stride")
    P = len(patch_boxes(h, w, int(cfg.K), int(cfg.stride)))
    N = int(cfg.N) if cfg.sampler in STOCHASTIC else 1
    blocked = ""
    if cfg.sampler in ("patchsampler", "gaussian"):
        try:
            find_fitted(cfg.sampler, cfg.sampler_data or sampler_key(clf), int(cfg.K))
        except ExplainerError as e:
            blocked = one_line(e, 600)
    return Cost(forwards=P * N + 1, detail=f"{P} patches × {N} in-fill{'s' if N > 1 else ''}", blocked=blocked)


def _dssr(clf: Classifier, cfg) -> Cost:
    # every iteration forwards and back-propagates the pair (preserved, deleted); the final pair and
    # the original are scored once more at the end
    try:
        cfg.resolve(*clf.input_size)
    except ExplainerError as e:
        return Cost(blocked=one_line(e, 600))
    return Cost(forwards=3, passes=2 * int(cfg.iterations), detail=f"{cfg.iterations} iterations × 2 images")


def _varsal(clf: Classifier, cfg) -> Cost:
    # the fitted encoder: one forward of its own network; per-image: steps × n_mc samples, each a
    # forward and backward of the classifier
    from .methods.varsal.method import _choose

    try:
        path, why = _choose(clf, cfg)
    except ExplainerError as e:
        return Cost(blocked=one_line(e, 600))
    if path is not None:
        return Cost(forwards=1, amortised=True, detail="the fitted encoder: one pass")
    return Cost(passes=int(cfg.steps) * int(cfg.n_mc), detail=f"{why}: {cfg.steps} steps × {cfg.n_mc} samples")


def _dcontrol(clf: Classifier, cfg) -> Cost:
    # fitted generator: one forward for the features (plus the generator's own small network);
    # per-image: iterations × backgrounds forward+backward (twice that with the deletion term);
    # then fine-tuning scores the image at finetune_samples + 1 numbers of kept pixels
    from .methods.dcontrol.store import choose_generator

    try:
        chosen = choose_generator(clf, cfg)
    except ExplainerError as e:
        return Cost(blocked=one_line(e, 600))
    tune = int(cfg.finetune_samples) + 1
    if chosen is not None:
        return Cost(forwards=1 + tune, amortised=True, detail=f"the fitted generator: one pass, + {tune} for fine-tuning")
    per = int(cfg.backgrounds) * (2 if cfg.delete > 0 else 1)  # the deletion term forwards the deleted composites too
    what = f"{cfg.backgrounds} backgrounds" + (" × 2 (kept and deleted)" if cfg.delete > 0 else "")
    return Cost(forwards=tune, passes=int(cfg.iterations) * per,
                detail=f"per-image: {cfg.iterations} iterations × {what}, + {tune} for fine-tuning")


def _mipin(clf: Classifier, cfg) -> Cost:
    # one forward (the gates and the logits), then the inverses top-down: about a backward's work
    from pathlib import Path

    from .methods.mipin.plan import get_plan
    from .methods.mipin.store import _missing_fit, fitted_paths

    try:
        get_plan(clf)
        if not (Path(cfg.fit).expanduser().exists() if cfg.fit else fitted_paths(clf)):
            raise _missing_fit(clf)
    except ExplainerError as e:
        return Cost(blocked=one_line(e, 600))
    return Cost(passes=1, amortised=True, detail="the fitted inverses: one pass down")


def _occlusion(clf: Classifier, cfg) -> Cost:
    # Captum's windows: ceil((side − window) / stride) + 1 positions a side, and the image itself
    from .methods.baselines import occlusion_starts

    h, w = clf.input_size
    if cfg.window > min(h, w):
        return Cost(blocked=f"occlusion: window {cfg.window} larger than the image {clf.input_size}")
    n = len(occlusion_starts(h, cfg.window, cfg.stride)) * len(occlusion_starts(w, cfg.window, cfg.stride))
    return Cost(forwards=n + 1, detail=f"{n} windows")


def _integrated_gradients(clf: Classifier, cfg) -> Cost:
    # steps path points, forward and backward; the convergence delta forwards the two ends
    return Cost(forwards=2, passes=int(cfg.steps), detail=f"{cfg.steps} path points")


def _rise(clf: Classifier, cfg) -> Cost:
    return Cost(forwards=int(cfg.masks), detail=f"{cfg.masks} masks")


def _one_gradient(clf: Classifier, cfg) -> Cost:
    return Cost(passes=1, detail="one gradient")


def _gradcam(clf: Classifier, cfg) -> Cost:
    # one gradient at the layer that ``gradcam_layer`` picks; a network whose layers cannot be
    # hooked (TorchScript, a flat exported graph) or that has no spatial layer cannot run it
    from .methods.baselines import private_copy
    from .methods.layers import hidden, last_spatial

    try:
        # the private copy Grad-CAM itself hooks (the dry forward's hooks never touch the shared network),
        # so its run finds the layer remembered
        last_spatial(clf.net if hidden(clf.net) else private_copy(clf.net), tuple(clf.input_size))
    except ExplainerError as e:
        return Cost(blocked=f"gradcam: {one_line(e, 600)}")
    return Cost(passes=1, detail="one gradient")


_ESTIMATES = {
    "pmi-ig": _pmi,
    "dssr": _dssr,
    "varsal": _varsal,
    "dcontrol": _dcontrol,
    "mipin": _mipin,
    "occlusion": _occlusion,
    "integrated-gradients": _integrated_gradients,
    "rise": _rise,
    "gradcam": _gradcam,
    "saliency": _one_gradient,
}


def seconds(clf: Classifier, method: str, config: Any = None, rates: Optional[Rates] = None) -> float:
    """The expected duration of a run in seconds (measuring ``clf`` first if it was not yet)."""
    return estimate(clf, method, config).seconds(rates or forwards_per_second(clf))


# ------------------------------------------------------------------------------- sized defaults
LARGE_INPUT = 160 * 160  # pixels: from here on a CPU gets the lighter per-image settings below
# Lighter settings for large inputs on a CPU (ImageNet's 224 px): the configs' defaults stay the
# papers' values, used on a GPU and for the small built-in models, and are one click away on the page.
# Each cuts the classifier passes 4–15× (ResNet-50 at 224 does a few forwards per second on 2 cores).
CPU_LARGE = {
    "pmi-ig": (dict(stride=8, N=2), "stride 8 and 2 in-fills (paper: every patch, 8 in-fills; default S = 4)"),
    "occlusion": (dict(window=16, stride=8), "16-px window at stride 8"),
    "rise": (dict(masks=300), "300 masks"),
    # a smaller lr for the short run: on efficientnet-lite0's seven photographs 1.01x Occlusion's top-10%
    # drop at lr 0.05 against 0.78x at 0.1 (issue 24; 0.1 for 150 steps, the default: 0.86x). lr 0.02
    # drops more (1.14x) but its 30 steps move log nu by at most 0.3, leaving the std map near the prior's
    "varsal": (dict(steps=30, lr=0.05), "30 per-image steps at learning rate 0.05 (default: 150 at 0.1)"),
    # the same passes as 60 iterations on 4 backgrounds; on efficientnet-lite0's seven photographs
    # 0.94x Occlusion's top-10% drop against 0.68x (issue 24; the README's real-network table)
    "dcontrol": (dict(iterations=120, backgrounds=2), "120 per-image iterations on 2 backgrounds (default: 300 on 4)"),
    "dssr": (dict(iterations=60), "60 iterations (paper: 300)"),
}


def sized_defaults(method: str, input_size: tuple[int, int], device: torch.device | str) -> tuple[dict, str]:
    """Settings that replace ``method``'s defaults for this input size and device, and one line
    saying so ("" and {} when the defaults stand: on a GPU, or for inputs under ``LARGE_INPUT``)."""
    h, w = input_size
    if torch.device(device).type != "cpu" or h * w < LARGE_INPUT or method not in CPU_LARGE:
        return {}, ""
    params, why = CPU_LARGE[method]
    return dict(params), f"lighter defaults for {w}×{h} on the CPU: {why}; the paper's values are one click away"
