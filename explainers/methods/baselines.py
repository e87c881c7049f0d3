"""Standard baselines, from Captum where Captum has them: Occlusion, Integrated Gradients,
Grad-CAM, gradient saliency; and RISE (Petsiuk et al. 2018), which no well-kept library ships,
written here in a dozen lines.

All maps are raw: Occlusion in probability drop, Integrated Gradients in logit units (they sum to
f(x) − f(baseline), the completeness axiom), Grad-CAM in the layer's activation units, RISE in
expected probability. Methods that hook into the network (Grad-CAM) run on a private copy of it,
so hooks never touch the model shared between browser sessions.
"""
from __future__ import annotations

import copy
import threading
import weakref
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..classifiers.base import Classifier
from ..config import knob
from ..core import MethodOutput, MethodSpec, register
from ..errors import ExplainerError
from ..progress import report
from .anytime import coarse_to_fine, distribute


class PixelModel(nn.Module):
    """Wraps a classifier so that it takes pixel-space input and returns logits (or probabilities)."""

    def __init__(self, clf: Classifier, net: Optional[nn.Module] = None, softmax: bool = False):
        super().__init__()
        self.clf, self.net, self.softmax = clf, net if net is not None else clf.net, softmax

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        out = self.net(self.clf.normalize(x01))
        return torch.softmax(out, dim=1) if self.softmax else out


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ExplainerError(msg)


# --------------------------------------------------------------------------------------- Occlusion
@dataclass(frozen=True)
class OcclusionConfig:
    """Occlusion (Zeiler & Fergus 2014; Captum's ``Occlusion`` windows and averaging): slide a
    ``window``×``window`` grey patch with ``stride``; the map is the drop of the target's
    probability, averaged over the windows covering each pixel."""

    window: int = knob(8, "side of the square occluder in pixels (default 8)", min=1, max=64, step=1)
    stride: int = knob(4, "step between occluder positions in pixels (default 4)", min=1, max=64, step=1)
    value: float = knob(0.5, "grey level of the occluder, in [0, 1] before the classifier's normalisation (default 0.5)",
                        min=0.0, max=1.0, step=0.05)
    batch_size: int = knob(64, "occluded images per forward (the map does not depend on it; default 64)", min=1,
                           max=1024, step=1, advanced=True)

    def __post_init__(self):
        _check(self.window >= 1 and self.stride >= 1, "occlusion: window and stride must be at least 1")
        _check(0 <= self.value <= 1, "occlusion: value must be in [0, 1]")


def occlusion_starts(size: int, window: int, stride: int) -> np.ndarray:
    """Captum's window offsets along one side: 0, S, …, ceil((size − window)/S)·S; the last window
    is clipped at the edge when (size − window) is not a multiple of S."""
    return np.arange(-(-(size - window) // stride) + 1, dtype=np.int64) * stride


def run_occlusion(clf: Classifier, x01: torch.Tensor, target: int, cfg: OcclusionConfig, progress=None) -> MethodOutput:
    # Not Captum's ``Occlusion.attribute`` itself: it reports nothing until its last window (minutes
    # for a ResNet-50 at 224 on a CPU) and cannot be stopped. The same windows are visited here in the
    # anytime order of PMI (``anytime.coarse_to_fine``), each once, and the pixels whose windows are
    # all done are published with their final values. The result equals Captum's (a test checks).

    h, w = clf.input_size
    _check(cfg.window <= min(h, w), f"occlusion: window {cfg.window} larger than the image {clf.input_size}")
    _check(cfg.stride <= cfg.window or cfg.window == h == w,
           f"occlusion: stride {cfg.stride} larger than the window {cfg.window} would skip pixels")
    ys, xs = occlusion_starts(h, cfg.window, cfg.stride), occlusion_starts(w, cfg.window, cfg.stride)
    y0, x0 = (a.ravel() for a in np.meshgrid(ys, xs, indexing="ij"))
    boxes = np.stack([x0, y0, np.minimum(x0 + cfg.window, w), np.minimum(y0 + cfg.window, h)], axis=1)
    plan = coarse_to_fine(boxes, (h, w))
    model = PixelModel(clf, softmax=True)
    x = x01.to(clf.device)
    total = len(boxes)
    drops = np.zeros(total, dtype=np.float64)
    report(progress, 0, total, "occluded images")
    with torch.no_grad():
        p0 = model(x)[0, target]
        for lo in range(0, total, cfg.batch_size):
            idx = plan.order[lo : lo + cfg.batch_size]
            batch = x.repeat(len(idx), 1, 1, 1)
            for b, (bx0, by0, bx1, by1) in enumerate(boxes[idx]):
                batch[b, :, by0:by1, bx0:bx1] = cfg.value
            drops[lo : lo + len(idx)] = (p0 - model(batch)[:, target]).double().cpu().numpy()
            done = lo + len(idx)
            partial = None
            if done < total and plan.due(done):
                partial = plan.partial({"occlusion": drops[:done]}, done, distribute)
            report(progress, done, total, "occluded images", partial=partial)
    full = np.zeros(total, dtype=np.float64)
    full[plan.order] = drops
    return MethodOutput({"occlusion": torch.from_numpy(distribute(full, boxes, (h, w)).astype(np.float32))})


# ----------------------------------------------------------------------------- Integrated Gradients
@dataclass(frozen=True)
class IntegratedGradientsConfig:
    """Captum ``IntegratedGradients`` from a constant grey ``value`` baseline, summed over channels."""

    steps: int = knob(32, "points m of the Riemann sum along the path (default 32)", min=1, max=512, step=1,
                      symbol="m")
    value: float = knob(0.0, "grey level of the baseline image x′, in [0, 1] before the classifier's normalisation "
                        "(0 = black, the default)", min=0.0, max=1.0, step=0.05, symbol="x′")
    batch_size: int = knob(32, "path points per forward (the map does not depend on it; default 32)", min=1, max=1024,
                           step=1, advanced=True)

    def __post_init__(self):
        _check(self.steps >= 1, "integrated-gradients: steps must be at least 1")
        _check(0 <= self.value <= 1, "integrated-gradients: value must be in [0, 1]")


def run_integrated_gradients(clf, x01, target, cfg: IntegratedGradientsConfig, progress=None) -> MethodOutput:
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(PixelModel(clf))
    attr, delta = ig.attribute(
        x01, baselines=cfg.value, target=target, n_steps=cfg.steps, internal_batch_size=cfg.batch_size, return_convergence_delta=True
    )
    return MethodOutput({"integrated-gradients": attr[0].sum(0)}, meta={"convergence_delta": float(delta.abs().max())})


# ------------------------------------------------------------------------------------- Grad-CAM
_PRIVATE: "weakref.WeakKeyDictionary[nn.Module, nn.Module]" = weakref.WeakKeyDictionary()
_PRIVATE_LOCK = threading.Lock()


def private_copy(net: nn.Module) -> nn.Module:
    """A per-process private copy of a shared network, for methods that must attach hooks."""
    with _PRIVATE_LOCK:
        if net not in _PRIVATE:
            _PRIVATE[net] = copy.deepcopy(net).eval()
        return _PRIVATE[net]


def gradcam_layer(net: nn.Module, input_size: Optional[tuple[int, int]] = None) -> nn.Module:
    """The layer Grad-CAM reads: the last module whose output is a 4-D activation larger than 1×1,
    i.e. the end of the convolutional part before global pooling, found by what the modules output
    in a dry forward (``methods.layers.last_spatial``), not by their class — so ``Conv2d``
    subclasses, blocks and unflattened ``torch.export`` modules qualify. On the zoo's networks this
    is ``features`` (embedded, VGG's pooled features, DenseNet, MobileNet), ResNet's ``layer4`` and
    GoogLeNet's ``inception5b``, as before."""
    from .layers import last_spatial

    try:
        return last_spatial(net, input_size)[1]
    except ExplainerError as e:
        raise ExplainerError(f"gradcam: {e}") from None


@dataclass(frozen=True)
class GradCAMConfig:
    """Captum ``LayerGradCam`` on the last convolutional features, ReLU'd and bilinearly upsampled."""

    relu: bool = knob(True, "keep only the positive part of the weighted activations (Grad-CAM's ReLU; default on)")
    layer: Optional[str] = knob(None, "the module Grad-CAM reads, by its name in the network (e.g. features.5, layer3); "
                                "empty = the last spatial activation before global pooling", auto="last spatial",
                                advanced=True)


def _named_layer(net: nn.Module, name: str) -> nn.Module:
    modules = dict(net.named_modules())
    if name not in modules or name == "":
        near = [n for n in modules if n and (n.startswith(name.split(".")[0]) or name.startswith(n))][:6]
        raise ExplainerError(f"gradcam: the network has no module named {name!r}"
                             + (f" (some it has: {', '.join(near)})" if near else ""))
    return modules[name]


def run_gradcam(clf, x01, target, cfg: GradCAMConfig, progress=None) -> MethodOutput:
    from captum.attr import LayerAttribution, LayerGradCam

    net = private_copy(clf.net)
    with _PRIVATE_LOCK:  # one Grad-CAM at a time per process: the copy's hooks are not re-entrant
        layer = _named_layer(net, cfg.layer) if cfg.layer else gradcam_layer(net, tuple(clf.input_size))
        cam = LayerGradCam(PixelModel(clf, net), layer)
        attr = cam.attribute(x01, target=target, relu_attributions=cfg.relu)
    up = LayerAttribution.interpolate(attr.detach(), tuple(clf.input_size), interpolate_mode="bilinear")
    return MethodOutput({"gradcam": up[0, 0]})


# ------------------------------------------------------------------------------------- Saliency
@dataclass(frozen=True)
class SaliencyConfig:
    """Captum ``Saliency``: |∂ logit / ∂ x|, max over channels (Simonyan et al. 2014)."""

    abs: bool = knob(True, "on: |gradient|, max over channels (Simonyan et al.); off: the signed gradient summed over "
                     "channels (default on)")


def run_saliency(clf, x01, target, cfg: SaliencyConfig, progress=None) -> MethodOutput:
    from captum.attr import Saliency

    attr = Saliency(PixelModel(clf)).attribute(x01, target=target, abs=cfg.abs)
    return MethodOutput({"saliency": attr[0].max(0).values if cfg.abs else attr[0].sum(0)})


# ------------------------------------------------------------------------------------------ RISE
@dataclass(frozen=True)
class RISEConfig:
    """RISE (Petsiuk et al. 2018): E[p(target | x ⊙ M) · M] / E[M] over random upsampled binary masks."""

    masks: int = knob(1000, "random masks N (default 1000)", min=1, max=10000, step=50, symbol="N")
    cells: int = knob(8, "side s of the coarse grid each mask is drawn on (default 8)", min=2, max=32, step=1, symbol="s")
    p: float = knob(0.5, "probability p that a grid cell is kept (default 0.5)", min=0.05, max=0.95, step=0.05,
                    symbol="p")
    batch_size: int = knob(100, "masked images per forward (the map does not depend on it; default 100)", min=1,
                           max=1024, step=1, advanced=True)
    seed: int = knob(0, "seeds the masks (default 0)", min=0, step=1)

    def __post_init__(self):
        _check(self.masks >= 1 and self.batch_size >= 1, "rise: masks and batch_size must be at least 1")
        _check(self.cells >= 2, "rise: cells must be at least 2")
        _check(0 < self.p < 1, "rise: p must be in (0, 1)")


def run_rise(clf, x01, target, cfg: RISEConfig, progress=None) -> MethodOutput:
    h, w = clf.input_size
    gen = torch.Generator().manual_seed(cfg.seed)
    cell_h, cell_w = -(-h // cfg.cells), -(-w // cfg.cells)
    # all random draws up front, so the result does not depend on the batch size
    grids = (torch.rand(cfg.masks, 1, cfg.cells, cfg.cells, generator=gen) < cfg.p).float()
    dy = torch.randint(0, cell_h, (cfg.masks,), generator=gen)
    dx = torch.randint(0, cell_w, (cfg.masks,), generator=gen)
    total = torch.zeros(h, w, device=x01.device)
    for start in range(0, cfg.masks, cfg.batch_size):
        sl = slice(start, min(start + cfg.batch_size, cfg.masks))
        up = F.interpolate(grids[sl], size=((cfg.cells + 1) * cell_h, (cfg.cells + 1) * cell_w), mode="bilinear", align_corners=False)
        masks = torch.stack([u[:, y : y + h, x : x + w] for u, y, x in zip(up, dy[sl], dx[sl])]).to(x01.device)
        with torch.no_grad():
            p = torch.softmax(clf.logits01(x01 * masks), dim=1)[:, target]
        total += (p.view(-1, 1, 1) * masks[:, 0]).sum(0)
        report(progress, sl.stop, cfg.masks, "masks")
    return MethodOutput({"rise": total / (cfg.masks * cfg.p)})


for _spec in [
    MethodSpec("occlusion", "Occlusion (Captum)", OcclusionConfig, run_occlusion, {"occlusion": "signed"},
               {"occlusion": "Δ probability"}, cite="Zeiler & Fergus 2014"),
    MethodSpec("integrated-gradients", "Integrated Gradients (Captum)", IntegratedGradientsConfig, run_integrated_gradients,
               {"integrated-gradients": "signed"}, {"integrated-gradients": "logit"}, cite="Sundararajan et al. 2017"),
    MethodSpec("gradcam", "Grad-CAM (Captum)", GradCAMConfig, run_gradcam, {"gradcam": "positive"},
               {"gradcam": "activation × gradient"}, cite="Selvaraju et al. 2017"),
    MethodSpec("saliency", "Gradient saliency (Captum)", SaliencyConfig, run_saliency, {"saliency": "positive"},
               {"saliency": "|∂ logit / ∂ pixel|"}, cite="Simonyan et al. 2014"),
    MethodSpec("rise", "RISE", RISEConfig, run_rise, {"rise": "positive"}, {"rise": "probability"},
               cite="Petsiuk et al. 2018"),
]:
    register(_spec)
