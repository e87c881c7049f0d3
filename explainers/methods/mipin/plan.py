"""Which part of a network MIP-IN inverts, and its forward pass layer by layer (Section 6.1).

Embedded ``nn.Sequential`` networks made of Conv2d / ReLU / MaxPool2d / Flatten / Linear /
Dropout are inverted whole (shapes-vgg, digits-cnn, digits-mlp). Networks with normalisation or
residual blocks (SmallResNet, torchvision ResNet / GoogLeNet / DenseNet / VGG with its
``features``) have their classifier module inverted on top of the last convolutional features
(the "trunk" gives ``X_0``). Any other layer raises an ``ExplainerError`` naming it.

Forward-ReLU gates (Section 4.2): every ``X_k`` that is a ReLU output is gated (also after max or
average pooling, which keep "zero iff inactive"); the input pixels are not ("the classical
propagation settings where forward relu stops at the second layer", Section 6.1), but the input of
a classifier module (the top convolutional features) is.

A :class:`Plan` is built once per network and input shape and checked: running it stage by stage
must give the network's own logits (:func:`get_plan`).
"""
from __future__ import annotations

import hashlib
import threading
import weakref
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...classifiers.base import Classifier
from ...errors import ExplainerError

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
        pool = getattr(net, "avgpool", None)
        if isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size in (1, (1, 1)):
            # EfficientNet / MobileNet: a *global* pool. With it in the trunk X_0 would be the pooled
            # vector (1280x1x1 on efficientnet-lite0), which has no position: a constant map. So X_0 is
            # the last feature map and the pooling a stage, inverted through the forward activations.
            head = [("avgpool", pool), ("flatten", nn.Flatten())]
            return "features", (), head + _leaves(net.classifier, "classifier")
        if isinstance(pool, nn.Module):  # torchvision VGG / AlexNet
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

