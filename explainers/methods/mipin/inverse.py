"""The inverse network (Algorithm 1): one layer's inverse :func:`inverse_step`, the whole chain
:func:`invert`.

Max-pooling puts the signal back where the forward maximum was (recorded switches, Eq. 8); global
average pooling (not in the paper) puts it back in proportion to the forward activations
(:func:`avgpool_shares`, exact for non-negative inputs); fits of version 1 keep their fitted
per-position inverse. The forward ReLU (Section 4.2, Eq. 9) zeroes the inverted signal wherever
the forward activation ``X_k`` of a gated layer is 0. The attribution (Algorithm 1 lines 1, 12–13, 16; Section 4.3) is
the same chain without biases: ``A_0 = G_1 W_1 G_2 W_2 … G_{L-1} W_L · Y_c``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .plan import Plan, Record


def inverse_step(
    plan: Plan, k: int, p: dict, S: torch.Tensor, rec: Record, bias: bool = True, gate: bool = True
) -> torch.Tensor:
    """``S_k = g_k(S_{k+1})`` for a stack of classes: ``S`` (C, B, *out_shape_k) -> (C, B, *in_shape_k).

    ``p`` holds stage k's solved parameters with a leading class axis (linear: ``W`` (C, d, m),
    ``b`` (C, d); conv: ``K`` (C, C_out, C_in, kh, kw), ``b`` (C, C_in); avgpool: nothing, or
    the fitted ``w``, ``b`` (C, c, h·w) of a version-1 fit). ``bias=False`` gives the linear
    part only (the attribution, Section 4.3); ``gate`` applies the forward ReLU (Section 4.2)
    where X_k is a ReLU output."""
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
    elif "w" in p:  # global average pooling, a fitted inverse (fits of version 1)
        ch, H, W = st.in_shape
        out = S.reshape(C, B, ch, 1) * p["w"][:, None]
        if bias:
            out = out + p["b"][:, None]
        out = out.reshape(C, B, ch, H, W)
    else:  # global average pooling: the signal goes back in proportion to the forward activations
        # The paper inverts dense, conv and max-pooling layers only (Section 4.1); for ResNet50 it fits
        # the whole classifier module on ImageNet (Section 6.1.2). Shares are ours: like Eq. 8's switches,
        # read off the forward pass, and exact. Other readings measured on efficientnet-lite0's top-10%
        # blur drop (× Occlusion's; shares 0.41): the pooling's minimum-norm inverse (the signal at every
        # position, then gated) 0.56, a per-position fitted inverse (version 1) 0.63 held-out, X itself
        # (CAM, no inverse) 0.55; none reaches 0.8 (README; scripts/mipin_imagenet_variants.py).
        out = S.reshape(C, B, st.in_shape[0], 1, 1) * avgpool_shares(rec.xs[k])[None]
    out = out.reshape(C, B, *st.in_shape)
    if gate and st.gate:
        out = out * (rec.xs[k] != 0).to(out.dtype)
    return out


def avgpool_shares(x: torch.Tensor) -> torch.Tensor:
    """The average-pooling inverse's weights for inputs ``x`` (B, c, H, W): ``x / mean(x)`` per
    channel, uniform (1) where a channel's mean is not positive. Like max-pooling's switches (Eq. 8)
    they come from the forward pass, and ``g(pool(x)) = x`` exactly for non-negative ``x``."""
    mean = x.mean((-2, -1), keepdim=True)
    pos = mean > 0
    return torch.where(pos, x / torch.where(pos, mean, torch.ones_like(mean)), torch.ones_like(x))


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

