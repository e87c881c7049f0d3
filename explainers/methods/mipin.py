"""MIP-IN: the mutual-information-preserving inverse network (paper 004, Sections 3–6, Algorithm 1).

The network's output is inverted layer by layer, top-down. For a target class ``c`` the signal
starts as the logit, ``S_L = Y_c`` (Algorithm 1, line 1), and each layer's inverse ``g`` is
*learned* on data so that ``S_l = g(S_{l+1})`` reconstructs the layer's input ``X_l`` in the
least-squares sense (Eq. 5):

- dense layer: ``g(S) = W S + b`` in closed form, ridge-regularised (Eq. 6),
  ``W = Cov(X, S) (Cov(S, S) + λ I)^-1``, ``b = E X − W E S``;
- convolution: a transposed convolution with the forward layer's shape (stride, padding) whose
  kernel and bias are fitted by least squares (Eq. 7) — solved here through the normal equations
  over the "transposed patches" of ``S`` (``conv_patches``), not by SGD;
- max-pooling: the signal is put back where the forward maximum was (recorded switches, Eq. 8);
- global average pooling (ResNet-style heads, not in the paper's list): the inverse keeps the
  pooling's connectivity, one weight per (channel, position) — ``X[c, i, j] ≈ w[c, i, j] S[c] +
  b[c, i, j]`` — i.e. Eq. 6 restricted to the connections of the forward layer, with the same λ.

Forward ReLU (Section 4.2, Eq. 9): wherever the forward activation ``X_l`` of a ReLU layer is 0,
the inverted signal is set to 0 as well. It is applied while *fitting* (Algorithm 1, lines 14–15:
the signals used to fit the next inverse down are the gated ones) and while explaining.

Readings of the paper (where it is loose), chosen so that the method works:

- Eq. 6 writes ``X̄ S̄ᵀ (S̄ S̄ᵀ + λ I)^-1`` with centred data matrices. We use covariances
  (sums divided by N), so that λ = 0.001 means the same thing whatever the number of samples and
  the statistics can be accumulated in a stream; without λ it is the same solution.
- Convolutions are fitted in closed form (the paper trains them for E = 20 epochs). The patches of
  ``S`` are linearly dependent (``S`` comes from lower-dimensional signals), so the normal
  equations get a ridge term too: ``conv_lam`` (a fitting option, default 0.1: chosen for the
  completeness of the source signal, see ``explainers/training/mipin.py``).
- Forward ReLU gates every ``X_l`` that is a ReLU output (also after max/average pooling, which
  keep "zero iff inactive"); the input pixels are not gated ("the classical propagation settings
  where forward relu stops at the second layer", Section 6.1) — but when only the classifier
  module is inverted, its input (the top convolutional features) is gated, as Section 6.1 says.
- Algorithm 1 fits one inverse network per target class on *all* N samples (the logit of class c
  of every sample is S_L); explaining class c uses class c's network.
- Attribution (Algorithm 1 lines 1, 12–13, 16; Section 4.3): ``A`` starts as ``Y_c`` and is
  multiplied, layer by layer, by the linear weight of each inverse (biases ignored), then gated by
  the forward ReLU: ``A_0 = G_1 W_1 G_2 W_2 … G_{L-1} W_L · Y_c`` (``G`` = the 0/1 gates,
  max-pooling switches are linear too). ``A_0`` is the bias-free part of the source signal ``S_0``:
  it is linear in the logit and in the input neurons' space. The map sums ``A_0`` over the input
  channels (the network's normalised input); for a classifier-module inversion it is averaged
  over channels and resized bilinearly to the input size, like Grad-CAM (Section 6.1). The map is
  signed (positive and negative evidence, Fig. 5); the paper applies a ReLU for its ImageNet
  figures, the pages show the positive part where that is what they compare.

Which part is inverted (Section 6.1): embedded ``nn.Sequential`` networks made of Conv2d / ReLU /
MaxPool2d / Flatten / Linear / Dropout are inverted whole (shapes-vgg, digits-cnn, digits-mlp).
Networks with normalisation or residual blocks (SmallResNet, torchvision ResNet / GoogLeNet /
DenseNet / VGG with its ``features``) have their classifier module inverted on top of the last
convolutional features. Any other layer raises an ``ExplainerError`` naming it.

The inverses are fitted by ``python -m explainers fit --explainer mipin --model ID --data SOURCE``
(``explainers/training/mipin.py``) from streamed sufficient statistics. For dense layers the fit
stores the eigen-decomposition of ``Cov(S, S) = U diag(e) Uᵀ`` and ``P = Cov(X, S) U``, so the
ridge can be re-solved for any λ at once: ``W(λ) = P diag(1/(e + λ)) Uᵀ``. That is exact for the
top layer; lower layers keep the statistics gathered with the fitted λ above them (a refit with
``--set lam=...`` gathers new ones). Convolution inverses are stored solved (their λ is fixed).

Completeness (Section 5): :func:`apc` and :func:`positive_apc` (Eq. 10–11) compare the logit of
the source signal with the logit of the input.
"""
from __future__ import annotations

import functools
import json
import math
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..classifiers.base import Classifier
from ..core import MethodOutput, MethodSpec, register
from .. import fitted
from ..errors import ExplainerError

FIT_NAME = "mipin"
FIT_VERSION = 1


# ---------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class MIPINConfig:
    """MIP-IN's knobs (defaults: the paper's).

    - ``lam`` = 0.001: the ridge λ of the dense inverses (Eq. 6, Section 6.1.2). A λ other than the
      fitted one re-solves every dense (and global-pooling) inverse from the stored statistics.
    - ``forward_relu`` = True: gate the inverted signal where the forward activation is 0
      (Section 4.2). False gives the "global" signal of Fig. 3 (same fitted inverses, no gates).
    - ``fit`` = None: path to a fitted ``mipin.safetensors``; None = the user's fit for the
      classifier (``$EXPLAINERS_HOME/fitted/<id>/``) if it has the class, else the committed one
      (``assets/explainers/<id>/``).
    """

    lam: float = field(default=0.001, metadata={"help": "ridge λ of the dense inverses (Eq. 6)"})
    forward_relu: bool = field(default=True, metadata={"help": "zero the inverted signal where the forward activation is 0 (Section 4.2)"})
    fit: Optional[str] = field(default=None, metadata={"help": "fitted inverses (.safetensors); empty = the classifier's fit"})

    def __post_init__(self) -> None:
        try:
            lam = float(self.lam)
        except (TypeError, ValueError):
            raise ExplainerError(f"mipin: lam must be a number, got {self.lam!r}") from None
        if not (math.isfinite(lam) and 0.0 <= lam <= 1e6):
            raise ExplainerError(f"mipin: lam must be a finite number in [0, 1e6], got {self.lam}")
        if not isinstance(self.forward_relu, bool):
            raise ExplainerError(f"mipin: forward_relu must be true or false, got {self.forward_relu!r}")
        if self.fit is not None and not isinstance(self.fit, (str, Path)):
            raise ExplainerError(f"mipin: fit must be a path, got {self.fit!r}")


# ---------------------------------------------------------------------------------------------
# the network as a chain of invertible stages

SUPPORTED = "Linear, Conv2d, MaxPool2d, global AdaptiveAvgPool2d, ReLU, Flatten, Dropout, Identity"
_PASS = (nn.Flatten, nn.Dropout, nn.Identity)
_STAGE = (nn.Linear, nn.Conv2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d)


@dataclass(frozen=True)
class Stage:
    """One invertible layer: ``kind`` in linear / conv / maxpool / avgpool; ``name`` its module's
    qualified name in the network (None for a functional pooling); ``in_shape`` the per-sample
    shape of its input ``X_k`` as the layer consumes it, ``x_shape`` the same tensor's natural
    shape (before any Flatten), ``out_shape`` the layer's output; ``relu`` whether a ReLU follows;
    ``gate`` whether ``X_k`` is a ReLU output (forward-ReLU gate, Section 4.2); ``hp`` the
    layer's hyper-parameters (conv: k, stride, padding, output_padding; pool: k, stride, ...)."""

    kind: str
    name: Optional[str]
    in_shape: tuple
    x_shape: tuple
    out_shape: tuple
    relu: bool
    gate: bool
    hp: tuple = ()

    @property
    def label(self) -> str:
        what = {"linear": "Linear", "conv": "Conv2d", "maxpool": "MaxPool2d", "avgpool": "AvgPool"}[self.kind]
        return f"{self.name or 'pool'} ({what}{' + ReLU' if self.relu else ''})"


@dataclass(frozen=True)
class Plan:
    """How a network is inverted: ``trunk`` (how to get ``X_0`` from the network's input:
    ``none`` for a whole-network inversion, else the kind of feature extractor), ``stages``,
    ``scope`` (``network`` or ``classifier``), ``input_shape`` (network input, per sample),
    ``x0_shape`` (shape of X_0), ``input_relu`` (a ReLU applied to X_0 before the first stage)."""

    trunk: str
    trunk_info: tuple
    stages: tuple
    scope: str
    input_shape: tuple
    x0_shape: tuple
    input_relu: bool = False

    def signature(self) -> list:
        """What a fit must match: stage kinds and shapes."""
        return [[s.kind, s.name, list(s.in_shape), list(s.out_shape), s.relu, s.gate] for s in self.stages]


def _leaves(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    out = []
    for name, m in module.named_modules(prefix=prefix):
        if len(list(m.children())) == 0:
            out.append((name, m))
    return out


def _split(net: nn.Module) -> tuple[str, tuple, list[tuple[Optional[str], nn.Module]]]:
    """(trunk kind, trunk info, head leaves as (qualified name, module)) for a supported network."""
    if isinstance(net, nn.Sequential):
        leaves = _leaves(net, "")
        if all(isinstance(m, _STAGE + _PASS + (nn.ReLU,)) for _, m in leaves):
            return "none", (), leaves
    cls = type(net).__name__
    if hasattr(net, "features") and isinstance(getattr(net, "classifier", None), nn.Module):
        if isinstance(getattr(net, "avgpool", None), nn.Module):  # torchvision VGG / AlexNet / EfficientNet
            # The classifier module's input is avgpool(features(x)) flattened: X_0 = that map (512x7x7
            # for VGG at 224, Section 6.1).
            return "features_avgpool", (), [("flatten", nn.Flatten())] + _leaves(net.classifier, "classifier")
        if isinstance(getattr(net, "pool", None), nn.Module):  # the embedded SmallResNet
            head = [("pool", net.pool), ("flatten", nn.Flatten())]
            return "features", (), head + _leaves(net.classifier, "classifier")
        if "DenseNet" in cls:  # forward: relu(features) -> adaptive_avg_pool2d(1) -> flatten -> classifier
            head = [(None, nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten())]
            return "features_relu", (), head + _leaves(net.classifier, "classifier")
    if isinstance(getattr(net, "fc", None), nn.Module) and isinstance(getattr(net, "avgpool", None), nn.Module):
        # torchvision ResNet / GoogLeNet: run the children in order up to avgpool (aux heads skipped).
        names = []
        for name, child in net.named_children():
            if name == "avgpool":
                break
            if child is None or name.lower().startswith("aux"):
                continue
            names.append(name)
        head = [("avgpool", net.avgpool), ("flatten", nn.Flatten())]
        if isinstance(getattr(net, "dropout", None), nn.Module):
            head.append(("dropout", net.dropout))
        head += _leaves(net.fc, "fc")
        return "children", tuple(names), head
    if isinstance(net, nn.Sequential):
        bad = [(n, m) for n, m in _leaves(net, "") if not isinstance(m, _STAGE + _PASS + (nn.ReLU,))]
        n, m = bad[0]
        raise ExplainerError(f"mipin: layer {n!r} ({type(m).__name__}) is not supported; MIP-IN inverts {SUPPORTED}")
    raise ExplainerError(
        f"mipin: cannot find the classifier module of {cls}; supported are nn.Sequential networks of "
        f"{SUPPORTED}, and networks with features + classifier (VGG, DenseNet, the embedded ResNet) "
        "or avgpool + fc (ResNet, GoogLeNet)"
    )


def _run_trunk(net: nn.Module, plan: Plan, x: torch.Tensor) -> torch.Tensor:
    if plan.trunk == "none":
        return x
    if plan.trunk == "features":
        return net.features(x)
    if plan.trunk == "features_avgpool":
        return net.avgpool(net.features(x))
    if plan.trunk == "features_relu":
        return F.relu(net.features(x))
    if plan.trunk == "children":
        if getattr(net, "transform_input", False) and hasattr(net, "_transform_input"):
            x = net._transform_input(x)
        for name in plan.trunk_info:
            x = getattr(net, name)(x)
        return x
    raise RuntimeError(plan.trunk)  # pragma: no cover


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _build_plan(net: nn.Module, input_shape: tuple) -> Plan:
    trunk, info, head = _split(net)
    dev = next((p.device for p in net.parameters()), torch.device("cpu"))
    dtype = next((p.dtype for p in net.parameters()), torch.float32)
    plan0 = Plan(trunk, info, (), "network" if trunk == "none" else "classifier", tuple(input_shape), ())
    with torch.no_grad():
        h = _run_trunk(net, plan0, torch.zeros(1, *input_shape, device=dev, dtype=dtype))
    x0_shape = tuple(h.shape[1:])
    raw: list[dict] = []
    input_relu = False
    nonneg = trunk != "none"  # Section 6.1: the top conv features (a ReLU output) are gated too
    cur_shape = x0_shape
    nat_shape = x0_shape
    for name, m in head:
        if isinstance(m, nn.ReLU):
            if raw:
                raw[-1]["relu"] = True
            else:
                input_relu = True
            nonneg = True
            continue
        if isinstance(m, nn.Flatten):
            cur_shape = (int(np.prod(cur_shape)),)
            continue
        if isinstance(m, _PASS):
            continue
        if not isinstance(m, _STAGE):
            raise ExplainerError(f"mipin: layer {name!r} ({type(m).__name__}) is not supported; MIP-IN inverts {SUPPORTED}")
        if raw and raw[-1]["relu"]:
            nonneg = True
        gate = bool(nonneg) if raw or trunk != "none" or input_relu else False
        entry = {"name": name, "in_shape": cur_shape, "x_shape": nat_shape, "relu": False, "gate": gate}
        if isinstance(m, nn.Linear):
            if len(cur_shape) != 1 or cur_shape[0] != m.in_features:
                raise ExplainerError(f"mipin: layer {name!r} expects {m.in_features} inputs, gets shape {cur_shape}")
            out = (m.out_features,)
            entry.update(kind="linear", hp=())
            nonneg = False
        elif isinstance(m, nn.Conv2d):
            if m.groups != 1 or _pair(m.dilation) != (1, 1) or m.padding_mode != "zeros" or isinstance(m.padding, str):
                raise ExplainerError(
                    f"mipin: layer {name!r} (Conv2d with groups/dilation/padding mode/'same' padding) is not supported; "
                    "MIP-IN inverts plain convolutions"
                )
            if len(cur_shape) != 3:
                raise ExplainerError(f"mipin: layer {name!r} (Conv2d) gets a flat input")
            k, s, p = _pair(m.kernel_size), _pair(m.stride), _pair(m.padding)
            H, W = cur_shape[1:]
            Ho, Wo = (H + 2 * p[0] - k[0]) // s[0] + 1, (W + 2 * p[1] - k[1]) // s[1] + 1
            op = (H - ((Ho - 1) * s[0] - 2 * p[0] + k[0]), W - ((Wo - 1) * s[1] - 2 * p[1] + k[1]))
            out = (m.out_channels, Ho, Wo)
            entry.update(kind="conv", hp=(k, s, p, op))
            nonneg = False
        elif isinstance(m, nn.MaxPool2d):
            if _pair(m.dilation) != (1, 1):
                raise ExplainerError(f"mipin: layer {name!r} (MaxPool2d with dilation) is not supported")
            with torch.no_grad():
                o = F.max_pool2d(torch.zeros(1, *cur_shape), m.kernel_size, m.stride, m.padding, 1, m.ceil_mode)
            out = tuple(o.shape[1:])
            entry.update(kind="maxpool", hp=(_pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding), bool(m.ceil_mode)))
        else:  # AdaptiveAvgPool2d
            osz = m.output_size
            osz = (osz, osz) if isinstance(osz, int) or osz is None else tuple(osz)
            if len(cur_shape) != 3:
                raise ExplainerError(f"mipin: layer {name!r} (AdaptiveAvgPool2d) gets a flat input")
            osz = tuple(cur_shape[1 + i] if v is None else int(v) for i, v in enumerate(osz))
            if osz == tuple(cur_shape[1:]):
                continue  # identity (e.g. VGG's 7x7 pool on a 7x7 map)
            if osz != (1, 1):
                raise ExplainerError(f"mipin: layer {name!r} (AdaptiveAvgPool2d to {osz}) is not supported; only global pooling")
            out = (cur_shape[0], 1, 1)
            entry.update(kind="avgpool", hp=())
        entry["out_shape"] = out
        raw.append(entry)
        cur_shape = out
        nat_shape = out
    if not raw or raw[-1]["kind"] != "linear":
        raise ExplainerError("mipin: the network must end with a Linear layer giving the logits")
    if raw[-1]["relu"]:
        raise ExplainerError("mipin: a ReLU after the logits is not supported")
    stages = tuple(
        Stage(e["kind"], e["name"], tuple(e["in_shape"]), tuple(e["x_shape"]), tuple(e["out_shape"]), e["relu"], e["gate"], e["hp"])
        for e in raw
    )
    return Plan(trunk, info, stages, plan0.scope, tuple(input_shape), x0_shape, input_relu)


_PLANS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
_PLANS_LOCK = threading.Lock()


def get_plan(clf: Classifier) -> Plan:
    """The inversion plan of ``clf.net`` (built and checked once per network and input shape).

    Checked: running the plan layer by layer gives the network's own logits; otherwise the
    network does something the plan does not see and MIP-IN refuses it."""
    shape = ((1 if clf.grayscale else 3), *clf.input_size)
    with _PLANS_LOCK:
        per = _PLANS.setdefault(clf.net, {})
        if shape in per:
            return per[shape]
    try:
        plan = _build_plan(clf.net, shape)
        g = torch.Generator().manual_seed(0)
        x = torch.rand(2, *shape, generator=g).to(clf.device)
        with torch.no_grad():
            want = clf.net(x).float()
            got = forward_record(clf.net, plan, x).logits.float()
    except (RuntimeError, TypeError, AttributeError) as e:
        raise ExplainerError(f"mipin: cannot run {type(clf.net).__name__} layer by layer ({str(e).splitlines()[0][:120]})") from None
    if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-3, atol=1e-3 * (1 + float(want.abs().max()))):
        raise ExplainerError(
            f"mipin: {type(clf.net).__name__} could not be split into features and a classifier module of {SUPPORTED} "
            "(the layer-by-layer forward does not reproduce its logits)"
        )
    with _PLANS_LOCK:
        _PLANS.setdefault(clf.net, {})[shape] = plan
    return plan


_DIGESTS: "weakref.WeakKeyDictionary[nn.Module, str]" = weakref.WeakKeyDictionary()


def net_digest(net: nn.Module) -> str:
    """A short hash of the network's weights (a fit is only valid for the weights it was made on)."""
    import hashlib

    with _PLANS_LOCK:
        if net in _DIGESTS:
            return _DIGESTS[net]
    h = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    d = h.hexdigest()[:16]
    with _PLANS_LOCK:
        _DIGESTS[net] = d
    return d


@dataclass
class Record:
    """The forward pass, layer by layer: ``xs[k]`` = X_k (B, *in_shape), max-pool switches, logits."""

    xs: list
    switches: dict
    logits: torch.Tensor


def _stage_forward(net: nn.Module, st: Stage, h: torch.Tensor, switches: Optional[dict] = None, k: int = -1) -> torch.Tensor:
    if st.kind in ("linear", "conv"):
        h = net.get_submodule(st.name)(h)
    elif st.kind == "maxpool":
        ks, s, p, ceil = st.hp
        h, idx = F.max_pool2d(h, ks, s, p, 1, ceil, return_indices=True)
        if switches is not None:
            switches[k] = idx
    else:
        h = F.adaptive_avg_pool2d(h, 1)
    return F.relu(h) if st.relu else h


def forward_record(net: nn.Module, plan: Plan, x: torch.Tensor) -> Record:
    """Run the network (normalised input ``x``, (B, *input_shape)) stage by stage, keeping X_k."""
    h = _run_trunk(net, plan, x)
    return forward_from_x0(net, plan, h)


def forward_from_x0(net: nn.Module, plan: Plan, h: torch.Tensor, keep: bool = True) -> Record:
    """The stages from X_0 on (for the source signal's logits in a classifier-module inversion)."""
    if plan.input_relu:
        h = F.relu(h)
    B = h.shape[0]
    xs, switches = [], {}
    for k, st in enumerate(plan.stages):
        h = h.reshape(B, *st.in_shape)
        if keep:
            xs.append(h)
        h = _stage_forward(net, st, h, switches, k)
    return Record(xs, switches, h.reshape(B, -1))


# ---------------------------------------------------------------------------------------------
# streaming least squares (Eq. 5–7)


class Moments:
    """Streamed centred moments for the regression ``X ≈ W S + b`` (rows are samples).

    Kept in float64: ``n``, ``mx`` = E X, ``ms`` = E S, ``css`` = Σ (S − ms)(S − ms)ᵀ and
    ``cxs`` = Σ (X − mx)(S − ms)ᵀ. Batches are merged with the pairwise update of Chan et al.,
    so any split of the data into batches gives the same result as one big batch.

    ``diag=True``: X is (n, c, q) and S (n, c) — one scalar regression per (channel, position)
    with the channel's S (the global-pooling inverse); ``css`` is then (c,) and ``cxs`` (c, q).
    """

    def __init__(self, dx, ds: int, device: torch.device | str = "cpu", diag: bool = False):
        self.diag = diag
        self.n = 0
        f64 = dict(dtype=torch.float64, device=device)
        if diag:
            c, q = dx
            self.mx, self.ms = torch.zeros(c, q, **f64), torch.zeros(c, **f64)
            self.css, self.cxs = torch.zeros(c, **f64), torch.zeros(c, q, **f64)
        else:
            self.mx, self.ms = torch.zeros(dx, **f64), torch.zeros(ds, **f64)
            self.css, self.cxs = torch.zeros(ds, ds, **f64), torch.zeros(dx, ds, **f64)

    def update(self, X: torch.Tensor, S: torch.Tensor) -> None:
        nb = int(X.shape[0])
        if nb == 0:
            return
        # batch-centred products in the data's precision (float32 GEMMs), accumulated in float64
        bx, bs = X.mean(0), S.mean(0)
        Xc, Sc = X - bx, S - bs
        if self.diag:
            css_b = (Sc * Sc).sum(0)
            cxs_b = (Xc * Sc[:, :, None]).sum(0)
        else:
            css_b = Sc.T @ Sc
            cxs_b = Xc.T @ Sc
        bx, bs = bx.double(), bs.double()
        n = self.n + nb
        dx, ds = bx - self.mx, bs - self.ms
        f = self.n * nb / n
        if self.diag:
            self.css += css_b.double() + f * ds * ds
            self.cxs += cxs_b.double() + f * dx * ds[:, None]
        else:
            self.css += css_b.double() + f * torch.outer(ds, ds)
            self.cxs += cxs_b.double() + f * torch.outer(dx, ds)
        self.mx += dx * (nb / n)
        self.ms += ds * (nb / n)
        self.n = n

    def covariances(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(Cov(S, S), Cov(X, S)): the sums divided by n (see the module's note on Eq. 6)."""
        if self.n == 0:
            raise ExplainerError("mipin: no samples to fit on")
        return self.css / self.n, self.cxs / self.n


def _inv_eig(e: torch.Tensor, lam: float) -> torch.Tensor:
    """1/(e + λ) with the pseudo-inverse's cut for λ = 0 (directions of ~zero variance get 0)."""
    e = e.clamp_min(0)
    d = e + lam
    tol = e.max().clamp_min(1e-300) * e.shape[-1] * torch.finfo(e.dtype).eps if e.numel() else 0.0
    return torch.where(d > tol, 1.0 / d.clamp_min(1e-300), torch.zeros_like(d))


def eig_stats(m: Moments) -> dict[str, torch.Tensor]:
    """What a dense inverse keeps for re-solving at any λ: ``U``, ``e`` (Cov(S,S) = U diag(e) Uᵀ),
    ``P`` = Cov(X, S) U, and the means ``mx``, ``ms``."""
    css, cxs = m.covariances()
    css = 0.5 * (css + css.T)
    e, U = torch.linalg.eigh(css)
    return {"P": cxs @ U, "U": U, "e": e, "mx": m.mx.clone(), "ms": m.ms.clone()}


def solve_dense(P, U, e, mx, ms, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 6 from the stored statistics: ``W = P diag(1/(e+λ)) Uᵀ`` = Cov(X,S)(Cov(S,S)+λI)^-1,
    ``b = E X − W E S``. Works on stacks (leading class axis) too."""
    P, U, e, mx, ms = (t.double() for t in (P, U, e, mx, ms))
    W = (P * _inv_eig(e, lam).unsqueeze(-2)) @ U.transpose(-1, -2)
    b = mx - (W @ ms.unsqueeze(-1)).squeeze(-1)
    return W, b


def ridge_inverse(m: Moments, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 6 directly from moments (W, b) — dense or, with ``diag``, the global-pooling inverse."""
    if m.diag:
        css, cxs = m.covariances()
        w = cxs * _inv_eig(css, lam)[:, None]
        return w, m.mx - w * m.ms[:, None]
    st = eig_stats(m)
    return solve_dense(st["P"], st["U"], st["e"], st["mx"], st["ms"], lam)


def solve_diag(cxs, css, mx, ms, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The global-pooling inverse from stored statistics (stacks with a leading class axis too)."""
    cxs, css, mx, ms = (t.double() for t in (cxs, css, mx, ms))
    w = cxs * _inv_eig(css, lam).unsqueeze(-1)
    return w, mx - w * ms.unsqueeze(-1)


def conv_padded(S: torch.Tensor, st_hp: tuple) -> torch.Tensor:
    """The transposed convolution as a correlation: insert stride−1 zeros between the entries of
    ``S`` (B, C_out, H', W') and pad by k−1−p (plus the output padding at the bottom/right), so that
    ``conv_transpose2d(S, K, stride, padding, output_padding) == conv2d(conv_padded(S), flip(K)ᵀ)``."""
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = st_hp
    B, C, H, W = S.shape
    if (sh, sw) != (1, 1):
        Z = S.new_zeros(B, C, (H - 1) * sh + 1, (W - 1) * sw + 1)
        Z[:, :, ::sh, ::sw] = S
        S = Z
    return F.pad(S, (kw - 1 - pw, kw - 1 - pw + ow, kh - 1 - ph, kh - 1 - ph + oh))


def conv_patches(S: torch.Tensor, st_hp: tuple, positions: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The regressors of Eq. 7: for each position of X, the transposed patch of S it is rebuilt
    from, ordered (C_out, kh, kw): (B, C_out·kh·kw, P). ``positions`` (B, P) picks flat positions
    of X per sample (None: all H·W, through ``F.unfold``)."""
    (kh, kw) = st_hp[0]
    Sp = conv_padded(S, st_hp)
    if positions is None:
        return F.unfold(Sp, (kh, kw))
    B, C, Hp, Wp = Sp.shape
    Wx = Wp - kw + 1
    ys, xs = positions // Wx, positions % Wx
    flat = Sp.reshape(B, C, Hp * Wp)
    cols = []
    for u in range(kh):
        for v in range(kw):
            idx = ((ys + u) * Wp + (xs + v))[:, None, :].expand(B, C, positions.shape[1])
            cols.append(torch.gather(flat, 2, idx))
    return torch.stack(cols, dim=2).reshape(B, C * kh * kw, positions.shape[1])


def solve_conv(m: Moments, st_hp: tuple, c_out: int, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 7 in closed form: regress X (per input channel) on the transposed patches of S; return
    the ``conv_transpose2d`` kernel (C_out, C_in, kh, kw) and bias (C_in,)."""
    (kh, kw) = st_hp[0]
    Kf, b = ridge_inverse(m, lam)  # (C_in, C_out*kh*kw): a conv2d kernel on conv_padded(S)
    Kt = Kf.reshape(-1, c_out, kh, kw).flip(-1, -2).transpose(0, 1).contiguous()
    return Kt, b


# ---------------------------------------------------------------------------------------------
# the inverse network (Algorithm 1)


def inverse_step(
    plan: Plan, k: int, p: dict, S: torch.Tensor, rec: Record, bias: bool = True, gate: bool = True
) -> torch.Tensor:
    """``S_k = g_k(S_{k+1})`` for a stack of classes: ``S`` (C, B, *out_shape_k) -> (C, B, *in_shape_k).

    ``p`` holds stage k's solved parameters with a leading class axis (linear: ``W`` (C, d, m),
    ``b`` (C, d); conv: ``K`` (C, C_out, C_in, kh, kw), ``b`` (C, C_in); avgpool: ``w``, ``b``
    (C, c, h·w)). ``bias=False`` gives the linear part only (the attribution, Section 4.3);
    ``gate`` applies the forward ReLU (Section 4.2) where X_k is a ReLU output."""
    st = plan.stages[k]
    C, B = S.shape[:2]
    # the top layer's inverse starts from the one target logit Y_c (Algorithm 1, line 1)
    top = k == len(plan.stages) - 1 and st.kind == "linear"
    S = S.reshape(C, B, *((1,) if top else st.out_shape))
    if st.kind == "linear":
        out = torch.einsum("cbm,cdm->cbd", S, p["W"])
        if bias:
            out = out + p["b"][:, None]
    elif st.kind == "conv":
        K = p["K"]
        c_out, c_in = K.shape[1], K.shape[2]
        _, s, pad, op = st.hp
        x = S.transpose(0, 1).reshape(B, C * c_out, *st.out_shape[1:])
        out = F.conv_transpose2d(x, K.reshape(C * c_out, c_in, *K.shape[3:]), None, s, pad, op, groups=C)
        out = out.reshape(B, C, c_in, *out.shape[2:]).transpose(0, 1)
        if bias:
            out = out + p["b"][:, None, :, None, None]
    elif st.kind == "maxpool":
        # Eq. 8: the signal goes back where the forward maximum was (overlapping windows add up).
        idx = rec.switches[k]
        ch, H, W = st.in_shape
        flat = S.new_zeros(C, B, ch, H * W)
        flat.scatter_add_(3, idx.reshape(1, B, ch, -1).expand(C, -1, -1, -1), S.reshape(C, B, ch, -1))
        out = flat.reshape(C, B, ch, H, W)
    else:  # global average pooling
        ch, H, W = st.in_shape
        out = S.reshape(C, B, ch, 1) * p["w"][:, None]
        if bias:
            out = out + p["b"][:, None]
        out = out.reshape(C, B, ch, H, W)
    out = out.reshape(C, B, *st.in_shape)
    if gate and st.gate:
        out = out * (rec.xs[k] != 0).to(out.dtype)
    return out


def invert(
    plan: Plan, params: dict, rec: Record, y: torch.Tensor, forward_relu: bool = True, upto: int = 0, keep: bool = False
) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Algorithm 1 for a stack of classes: ``y`` (C, B) target logits; ``params[k]`` per stage.

    Returns (S, A, layers): the inverted signal and the attribution at X_upto
    ((C, B, *in_shape_upto)); ``layers`` = [S_k for k = L-1 .. upto] when ``keep``."""
    S = y[..., None]
    A = y[..., None]
    layers = []
    for k in range(len(plan.stages) - 1, upto - 1, -1):
        S = inverse_step(plan, k, params.get(k, {}), S, rec, bias=True, gate=forward_relu)
        A = inverse_step(plan, k, params.get(k, {}), A, rec, bias=False, gate=forward_relu)
        if keep:
            layers.append(S)
    return S, A, layers


# ---------------------------------------------------------------------------------------------
# fitted inverses: storage and loading

_F16_ABOVE = 1 << 17  # tensors with more entries are stored as float16 (scaled per column)


def pack(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """float32 tensors; large ones as float16 with a float32 scale per column (per 2-D filter for
    conv kernels), which keeps float16's relative precision (~5e-4) without over/underflow."""
    out = {}
    for key, t in state.items():
        t = t.detach().float().cpu().contiguous()
        if t.numel() > _F16_ABOVE and t.dim() >= 2:
            dims = (-2, -1) if t.dim() >= 4 else (-2,)  # conv kernels: one scale per 2-D filter
            scale = t.abs().amax(dim=dims, keepdim=True).clamp_min(1e-30)
            out[key + "@f16"] = (t / scale).half().contiguous()
            out[key + "@scale"] = scale.contiguous()
        else:
            out[key] = t
    return out


def unpack(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, t in tensors.items():
        if key.endswith("@scale"):
            continue
        if key.endswith("@f16"):
            base = key[: -len("@f16")]
            out[base] = t.float() * tensors[base + "@scale"].float()
        else:
            out[key] = t
    return out


@dataclass
class Fit:
    """A loaded fit: stored statistics per stage (stacked over its classes) and its card."""

    path: str
    card: dict
    stats: dict  # k -> {name: tensor (n_classes, ...)}
    classes: list
    device: str = "cpu"

    @property
    def lam(self) -> float:
        return float(self.card["config"]["lam"])


@functools.lru_cache(maxsize=8)
def _load_fit(path: str, device: str) -> Fit:
    tensors, card = fitted.load_fitted(path, device="cpu")
    tensors = unpack(tensors)
    stats: dict[int, dict] = {}
    for key, t in tensors.items():
        stage, name = key.split(".", 1)
        stats.setdefault(int(stage[1:]), {})[name] = t.to(device)
    return Fit(path, card, stats, [int(c) for c in card["classes"]], device)


def load_fit(path: str | Path, device: torch.device | str = "cpu") -> Fit:
    """A fit, loaded once per (path, device); never mutate it."""
    p = Path(path).expanduser().resolve()
    if not p.exists() or not p.with_suffix(".json").exists():
        raise ExplainerError(f"mipin: no fitted inverses at {p} (needs the .safetensors and the .json beside it)")
    try:
        return _load_fit(str(p), str(torch.device(device)))
    except (KeyError, ValueError, json.JSONDecodeError) as e:
        raise ExplainerError(f"mipin: unreadable fit {p}: {e}") from None


def solve_stage(kind: str, st: dict, lam: float) -> dict[str, torch.Tensor]:
    """A stage's parameters (stacked over classes, float32) from its stored statistics at λ."""
    if kind == "linear":
        W, b = solve_dense(st["P"], st["U"], st["e"], st["mx"], st["ms"], lam)
        return {"W": W.float(), "b": b.float()}
    if kind == "avgpool":
        w, b = solve_diag(st["cxs"], st["css"], st["mx"], st["ms"], lam)
        return {"w": w.float(), "b": b.float()}
    if kind == "conv":
        return {"K": st["K"].float(), "b": st["b"].float()}
    return {}


@functools.lru_cache(maxsize=64)
def _solved(path: str, device: str, lam: float, cls: int) -> dict:
    fit = _load_fit(path, device)
    i = fit.classes.index(cls)
    kinds = [s[0] for s in fit.card["plan"]]
    return {k: solve_stage(kind, {n: t[i : i + 1] for n, t in fit.stats.get(k, {}).items()}, lam) for k, kind in enumerate(kinds)}


def solved_params(fit: Fit, cls: int, lam: float) -> dict:
    """Stage parameters for one class (leading axis of size 1), solved at λ and cached."""
    return _solved(fit.path, fit.device, float(lam), int(cls))


def fitted_paths(clf: Classifier) -> list[Path]:
    """Candidate fits for ``clf``: the user's first, then the committed one."""
    return fitted.candidates(clf.id, f"{FIT_NAME}.safetensors")


def fit_command(clf: Classifier) -> str:
    data = clf.dataset or "FOLDER"
    return f"python -m explainers fit --explainer mipin --model {clf.id} --data {data}"


def _missing_fit(clf: Classifier, target: Optional[int] = None) -> ExplainerError:
    if clf.dataset:
        how = f"fit them with `{fit_command(clf)}`"
    else:
        how = (f"fit them with `{fit_command(clf)}` where --data is an image folder (one sub-folder per class, "
               "e.g. ImageNet validation images): this model has no built-in dataset")
    which = "" if target is None else f" for class {target}"
    return ExplainerError(f"mipin: no fitted inverses for {clf.id}{which}; {how}")


def choose_fit(clf: Classifier, cfg: MIPINConfig, target: Optional[int] = None) -> Fit:
    """The fit to use for ``clf`` (and ``target``), checked against the network's plan."""
    plan = get_plan(clf)
    paths = [Path(cfg.fit).expanduser()] if cfg.fit else fitted_paths(clf)
    if not paths:
        raise _missing_fit(clf, target)
    fits = [load_fit(p, clf.device) for p in paths]
    digest = net_digest(clf.net)
    stale = []
    for fit in fits:
        if fit.card.get("plan") != plan.signature():
            if cfg.fit:
                raise ExplainerError(f"mipin: the fit {fit.path} was made for another network (layers differ from {clf.id})")
            continue
        if fit.card.get("net_digest") not in (None, digest):
            stale.append(fit.path)
            continue
        if target is None or target in fit.classes:
            return fit
    if stale:
        raise ExplainerError(
            f"mipin: the fit {stale[0]} was made for other weights of {clf.id} (the classifier was retrained); "
            f"refit with `{fit_command(clf)}`"
        )
    if cfg.fit:
        raise ExplainerError(f"mipin: the fit {fits[0].path} has no inverse for class {target} (fitted classes: {fits[0].classes})")
    raise _missing_fit(clf, target)


# ---------------------------------------------------------------------------------------------
# explaining


def _to_map(clf: Classifier, plan: Plan, a: torch.Tensor) -> torch.Tensor:
    """(B, *x0) attribution at X_0 -> (B, H, W) map: sum over input channels (whole network), or
    channel mean + bilinear resize (classifier module, Section 6.1)."""
    B = a.shape[0]
    a = a.reshape(B, *plan.x0_shape)
    if plan.scope == "network":
        return a.sum(1) if a.dim() == 4 else a.reshape(B, *clf.input_size)
    if a.dim() == 2:  # a flat X_0 (no spatial features): nothing to localise
        a = a[:, :, None, None]
    m = a.mean(1, keepdim=True)
    return F.interpolate(m, size=tuple(clf.input_size), mode="bilinear", align_corners=False)[:, 0]


def _layer_summary(st_shape: tuple, s: torch.Tensor) -> np.ndarray:
    s = s.reshape(st_shape)
    if s.dim() == 3 and s.shape[1] * s.shape[2] > 1:  # a feature map: its channel mean
        return s.mean(0).float().cpu().numpy()
    return s.reshape(-1).float().cpu().numpy()


def explain_batch(
    clf: Classifier, x01: torch.Tensor, targets: Sequence[int], cfg: MIPINConfig = MIPINConfig(), keep_layers: bool = False
) -> dict[str, Any]:
    """MIP-IN for a batch (one target per image): maps (B, H, W), source signals S_0, their
    logits and the inputs' logits (B, n_classes), and (``keep_layers``) the inverted signals."""
    plan = get_plan(clf)
    targets = [int(t) for t in targets]
    B = x01.shape[0]
    with torch.no_grad():
        xn = clf.normalize(x01.to(clf.device))
        rec = forward_record(clf.net, plan, xn)
        S0 = torch.zeros(B, *plan.stages[0].in_shape, device=clf.device)
        A0 = torch.zeros_like(S0)
        layers: list = [None] * B
        for c in sorted(set(targets)):
            fit = choose_fit(clf, cfg, c)
            params = solved_params(fit, c, cfg.lam)
            sel = [i for i, t in enumerate(targets) if t == c]
            sub = _select(rec, sel)
            S, A, lay = invert(plan, params, sub, sub.logits[:, c][None], cfg.forward_relu, keep=keep_layers)
            S0[sel], A0[sel] = S[0], A[0]
            if keep_layers:
                for j, i in enumerate(sel):
                    layers[i] = [t[0, j] for t in lay]
        maps = _to_map(clf, plan, A0)
        if plan.scope == "network":
            src_logits = clf.net(S0.reshape(B, *plan.input_shape))
        else:
            src_logits = forward_from_x0(clf.net, plan, S0.reshape(B, *plan.x0_shape), keep=False).logits
    return {"maps": maps, "source": S0.reshape(B, *plan.x0_shape), "attribution_x0": A0.reshape(B, *plan.x0_shape),
            "source_logits": src_logits.float(), "logits": rec.logits.float(), "layers": layers, "plan": plan}


def _select(rec: Record, sel: list[int]) -> Record:
    idx = torch.as_tensor(sel, device=rec.logits.device)
    return Record([x[idx] for x in rec.xs], {k: v[idx] for k, v in rec.switches.items()}, rec.logits[idx])


def source_image(clf: Classifier, plan: Plan, s0: torch.Tensor) -> np.ndarray:
    """The source signal for display: in pixel space (H, W, 3), un-normalised but not clipped, for
    a whole-network inversion; the channel mean resized to the input (H, W) for a classifier module."""
    if plan.scope == "network" and len(plan.x0_shape) == 3:
        c = plan.x0_shape[0]
        mean = torch.tensor(clf.mean[:c], device=s0.device).view(c, 1, 1)
        std = torch.tensor(clf.std[:c], device=s0.device).view(c, 1, 1)
        px = s0 * std + mean
        if c == 1:
            px = px.expand(3, -1, -1)
        return px.permute(1, 2, 0).float().cpu().numpy()
    return _to_map(clf, plan, s0[None])[0].float().cpu().numpy()


def run(clf: Classifier, x01: torch.Tensor, target: int, cfg: MIPINConfig, progress: Optional[Callable] = None) -> MethodOutput:
    out = explain_batch(clf, x01, [target], cfg, keep_layers=True)
    plan: Plan = out["plan"]
    fit = choose_fit(clf, cfg, target)
    extras: dict[str, Any] = {
        "source": out["source"][0].float().cpu().numpy(),
        "source_image": source_image(clf, plan, out["source"][0]),
        "source_logits": out["source_logits"][0].cpu().numpy(),
        "logits": out["logits"][0].cpu().numpy(),
        "attribution_x0": out["attribution_x0"][0].float().cpu().numpy(),
        "layer_names": [],
    }
    layers = out["layers"][0]
    L = len(plan.stages)
    for j, s in enumerate(layers):  # S_k for k = L-1 .. 0
        k = L - 1 - j
        st = plan.stages[k]
        name = "X_0 (input)" if k == 0 and plan.scope == "network" else (
            "X_0 (top conv features)" if k == 0 else f"X_{k}: output of {plan.stages[k - 1].label}")
        extras["layer_names"].append(name)
        extras[f"layer.{len(extras['layer_names']) - 1}"] = _layer_summary(st.x_shape, s)
    unit = "input units" if plan.scope == "network" else "feature units"
    meta = {
        "amortised": True,
        "scope": plan.scope,
        "fit": fit.path,
        "fitted_lam": fit.lam,
        "resolved": not math.isclose(cfg.lam, fit.lam, rel_tol=1e-12),
        "unit": unit,
        "units": {"attribution": unit},
        "source_logit": float(out["source_logits"][0, target]),
        "logit": float(out["logits"][0, target]),
    }
    return MethodOutput({"attribution": out["maps"][0]}, extras=extras, meta=meta)


# ---------------------------------------------------------------------------------------------
# completeness (Section 5)


def _per_class_mean(values: np.ndarray, classes: Optional[np.ndarray]) -> float:
    if values.size == 0:
        raise ExplainerError("APC needs at least one sample")
    if classes is None:
        return float(values.mean())
    classes = np.asarray(classes).reshape(-1)
    if classes.shape != values.shape:
        raise ExplainerError("APC: classes must have one entry per sample")
    return float(np.mean([values[classes == c].mean() for c in np.unique(classes)]))


def _apc_terms(logit_x, logit_s) -> tuple[np.ndarray, np.ndarray]:
    fx = np.asarray(logit_x, dtype=np.float64).reshape(-1)
    fs = np.asarray(logit_s, dtype=np.float64).reshape(-1)
    if fx.shape != fs.shape:
        raise ExplainerError("APC: the two logit arrays must have the same length")
    if np.any(fx == 0):
        raise ExplainerError("APC is undefined for a logit of exactly 0 (Eq. 10 divides by |Φ(X)|)")
    return fx, fs


def apc(logit_x, logit_s, classes=None) -> float:
    """Average percentage change, Eq. 10, in percent:
    ``(1/C) Σ_c (1/N_c) Σ_i |Φ(X^i) − Φ(S^i)| / |Φ(X^i)| × 100``, where Φ is the logit of the
    class being explained (``classes[i]``, which also groups the samples; None = one group)."""
    fx, fs = _apc_terms(logit_x, logit_s)
    return 100.0 * _per_class_mean(np.abs(fx - fs) / np.abs(fx), classes)


def positive_apc(logit_x, logit_s, classes=None) -> float:
    """Positive APC, Eq. 11, in percent: as :func:`apc` with ``relu(Φ(X) − Φ(S))`` (a source signal
    that scores higher than the input counts as complete)."""
    fx, fs = _apc_terms(logit_x, logit_s)
    return 100.0 * _per_class_mean(np.maximum(fx - fs, 0.0) / np.abs(fx), classes)


def completeness(clf: Classifier, x01: torch.Tensor, targets: Sequence[int], cfg: MIPINConfig = MIPINConfig(), batch_size: int = 64) -> dict:
    """APC and positive APC of the source signals of ``x01`` (N, 3, H, W) for ``targets``."""
    if batch_size < 1:
        raise ExplainerError("batch_size must be at least 1")
    fx, fs = [], []
    targets = [int(t) for t in targets]
    for i in range(0, x01.shape[0], batch_size):
        t = targets[i : i + batch_size]
        out = explain_batch(clf, x01[i : i + batch_size], t, cfg)
        idx = torch.arange(len(t))
        fx.append(out["logits"][idx, t].cpu().numpy())
        fs.append(out["source_logits"][idx, t].cpu().numpy())
    fx, fs = np.concatenate(fx), np.concatenate(fs)
    return {"apc": apc(fx, fs, targets), "positive_apc": positive_apc(fx, fs, targets), "logit_x": fx, "logit_s": fs}


# ---------------------------------------------------------------------------------------------
# registration

register(
    MethodSpec(
        name="mipin",
        title="MIP-IN (mutual-information-preserving inverse network)",
        config=MIPINConfig,
        run=run,
        maps={"attribution": "signed"},
        units={"attribution": "input units"},
        paper="004_ac7769c5886fab98",
        needs_fit=True,
    )
)
