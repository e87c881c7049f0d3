"""The classifier's feature maps ``F(I)`` and the mask generator ``G`` (Section 3.1, Appendix A.1).

- Feature maps: every module's output is recorded once at the input size (:func:`probe_plan`);
  for each spatial size the module that finishes last is the tap (a stage's container:
  ``layer1..4`` of a torchvision ResNet, ``features`` children of the embedded SmallResNet, the
  pooling layers of the ``nn.Sequential`` VGG / CNN). Taps from the deepest (≥ 2×2) up to twice
  the coarse size are used; finer ones than the coarse mask are average-pooled to it. The plan is
  JSON and stored with a fit. :func:`capture` hooks the taps for one forward (``try/finally``).
- ``G`` is U-Net-style: the deepest map goes through the feature filter (Eq. 10,
  ``Y_ij = X_ij · sigmoid(X_ijᵀ C_c)``), is upsampled by transposed convolutions and concatenated
  with the shallower maps, each merge followed by a bottleneck block; it outputs the coarse map
  ``M^g`` at 1/4 of the input.
- Networks with no spatial feature maps (the digits MLP): the generator gets the image itself
  through a small conv encoder of its own, and the classifier's last hidden layer (the input of
  its last ``nn.Linear``), filtered by Eq. 10 and tiled over the coarse grid.
"""
from __future__ import annotations

import math
import threading
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ...classifiers.base import Classifier
from ...errors import ExplainerError
from .controller import coarse_size, instance_normalise


def probe_plan(clf: Classifier, width: int = 32) -> dict:
    """Which feature maps the generator uses: one forward at the input size with a hook on every
    module (removed after). Returns a JSON-able plan, stored with a fit."""
    net = clf.net
    h, w = clf.input_size
    last: dict[str, tuple[int, tuple]] = {}
    lin_in: dict[str, tuple[int, int]] = {}
    counter = [0]
    handles = []
    me = threading.get_ident()  # the net is shared by sessions: ignore forwards of other threads

    def out_hook(name):
        def hook(_m, _inp, out):
            if threading.get_ident() != me:
                return
            counter[0] += 1
            if isinstance(out, torch.Tensor):
                last[name] = (counter[0], tuple(out.shape))
        return hook

    def lin_hook(name):
        def hook(_m, inp):
            if threading.get_ident() != me:
                return
            counter[0] += 1
            if inp and isinstance(inp[0], torch.Tensor):
                lin_in[name] = (counter[0], int(inp[0].shape[-1]))
        return hook

    try:
        for name, m in net.named_modules():
            if name == "":
                continue
            handles.append(m.register_forward_hook(out_hook(name)))
            if isinstance(m, nn.Linear):
                handles.append(m.register_forward_pre_hook(lin_hook(name)))
        with torch.no_grad():
            logits = clf.logits01(torch.full((1, 3, h, w), 0.5, device=clf.device))
    finally:
        for hd in handles:
            hd.remove()
    num_classes = int(logits.shape[-1])
    ch, cw = coarse_size((h, w))
    by_size: dict[tuple[int, int], tuple[int, str, int]] = {}
    for name, (order, shape) in last.items():
        if len(shape) != 4 or min(shape[-2:]) < 2:
            continue
        size = (int(shape[-2]), int(shape[-1]))
        if size[0] > 2 * ch or size[1] > 2 * cw:
            continue
        if size not in by_size or order > by_size[size][0]:
            by_size[size] = (order, name, int(shape[1]))
    in_ch = 1 if clf.grayscale else 3
    base = {"input_size": [h, w], "coarse": [ch, cw], "num_classes": num_classes, "width": int(width), "in_channels": in_ch}
    if by_size:
        taps = [
            {"name": name, "channels": c, "size": list(size)}
            for size, (_, name, c) in sorted(by_size.items(), key=lambda kv: (kv[0][0] * kv[0][1], kv[1][0]))
        ]
        return {**base, "mode": "conv", "taps": taps}
    if not lin_in:
        raise ExplainerError(
            f"dcontrol: {clf.id} has neither convolutional feature maps nor a final Linear layer to build the mask generator on"
        )
    name, (_, c) = max(lin_in.items(), key=lambda kv: kv[1][0])
    return {**base, "mode": "vector", "taps": [], "vector": {"name": name, "channels": c}}


def capture(clf: Classifier, x01: torch.Tensor, plan: dict) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Run the classifier on ``x01`` and return ``(feature maps by tap name, logits)``.

    Hooks are registered for this forward only and always removed (``try/finally``). The network
    is shared by every browser session, so another thread may run it while our hooks are on: each
    hook records only the forwards of the thread that registered it."""
    modules = dict(clf.net.named_modules())
    feats: dict[str, torch.Tensor] = {}
    handles = []
    me = threading.get_ident()

    def out_hook(name):
        def hook(_m, _inp, out):
            if threading.get_ident() == me:
                feats[name] = out
        return hook

    def in_hook(name):
        def hook(_m, inp):
            if threading.get_ident() == me:
                feats[name] = inp[0].flatten(1)
        return hook

    try:
        for t in plan["taps"]:
            if t["name"] not in modules:
                raise ExplainerError(f"dcontrol: the fitted generator expects layer {t['name']!r}, which {clf.id} does not have")
            handles.append(modules[t["name"]].register_forward_hook(out_hook(t["name"])))
        if plan["mode"] == "vector":
            name = plan["vector"]["name"]
            if name not in modules:
                raise ExplainerError(f"dcontrol: the fitted generator expects layer {name!r}, which {clf.id} does not have")
            handles.append(modules[name].register_forward_pre_hook(in_hook(name)))
        logits = clf.logits01(x01)
    finally:
        for hd in handles:
            hd.remove()
    return feats, logits


# ---------------------------------------------------------------------------------------------
# the mask generator G (Section 3.1, Appendix A.1)


def _cbr(cin: int, cout: int, k: int = 1, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1×1 reduce, 3×3, 1×1 expand, residual (projected when shapes differ)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = max(4, cout // 2)
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
            nn.Conv2d(mid, mid, 3, 1, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.short = nn.Identity() if cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.short(x))


class FeatureFilter(nn.Module):
    """Appendix A.1, Eq. 10: ``Y_ij = X_ij · sigmoid(X_ijᵀ C_c)`` with a class embedding ``C``."""

    def __init__(self, num_classes: int, channels: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.zeros(num_classes, channels))

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """``X_ijᵀ C_k`` for every class: (B, K, H, W) for maps (B, C, H, W), (B, K) for vectors."""
        if x.dim() == 4:
            return torch.einsum("bchw,kc->bkhw", x, self.embedding)
        return x @ self.embedding.t()

    def forward(self, x: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        emb = self.embedding[cls]  # (B, C)
        if x.dim() == 4:
            s = torch.einsum("bchw,bc->bhw", x, emb).unsqueeze(1)
        else:
            s = (x * emb).sum(dim=1, keepdim=True)
        return x * torch.sigmoid(s)

    def pretrain_loss(self, x: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """A.1: maximise mean(sigmoid(Xᵀ C_c)) for the class, minimise it for the other classes."""
        s = torch.sigmoid(self.scores(x))
        s = s.flatten(2).mean(-1) if s.dim() == 4 else s  # (B, K)
        onehot = F.one_hot(cls, s.shape[1]).to(s.dtype)
        pos = (s * onehot).sum(1)
        neg = (s * (1 - onehot)).sum(1) / max(1, s.shape[1] - 1)
        return (neg - pos).mean()


class MaskGenerator(nn.Module):
    """U-Net-style generator on the classifier's feature maps (Section 3.1): outputs ``M^g``
    (B, 1, h, w) at the coarse size. Built from a plan (:func:`probe_plan`)."""

    def __init__(self, plan: dict):
        super().__init__()
        self.plan = plan
        # the layers' default initialisation draws from the global RNG: fork it so that building a
        # generator leaves the caller's random state alone (weights come from init_generator or a fit)
        with torch.random.fork_rng(devices=[]):
            self._build(plan)

    def _build(self, plan: dict) -> None:
        w = int(plan["width"])
        ch, cw = plan["coarse"]
        self.coarse = (int(ch), int(cw))
        half = max(4, w // 2)
        if plan["mode"] == "conv":
            taps = plan["taps"]
            deep = taps[0]
            self.filter = FeatureFilter(plan["num_classes"], deep["channels"])
            self.stem = _cbr(deep["channels"], w)
            self.up_names: list[str] = []
            self.ups = nn.ModuleList()
            self.skips = nn.ModuleList()
            self.blocks = nn.ModuleList()
            size = tuple(deep["size"])
            for t in taps[1:]:
                if t["size"][0] > ch or t["size"][1] > cw:
                    continue
                self.up_names.append(t["name"])
                self.ups.append(self._up(w))
                self.skips.append(_cbr(t["channels"], half))
                self.blocks.append(Bottleneck(w + half, w))
                size = tuple(t["size"])
            self.extra_ups = nn.ModuleList()
            while size[0] < ch or size[1] < cw:  # no tap at the coarse size: keep upsampling
                self.extra_ups.append(nn.Sequential(self._up(w), Bottleneck(w, w)))
                size = (size[0] * 2, size[1] * 2)
            self.fine_names = [t["name"] for t in taps[1:] if t["size"][0] > ch or t["size"][1] > cw]
            self.fine = nn.ModuleList([_cbr(t["channels"], half) for t in taps[1:] if t["name"] in self.fine_names])
            self.fine_block = Bottleneck(w + half * len(self.fine_names), w) if self.fine_names else None
        else:
            c = plan["vector"]["channels"]
            self.filter = FeatureFilter(plan["num_classes"], c)
            self.vec = nn.Sequential(nn.Linear(c, w), nn.ReLU())
            layers: list[nn.Module] = [_cbr(plan["in_channels"], half, 3)]
            side, cin = plan["input_size"][0], half
            while side // 2 >= ch and side > ch:
                layers.append(_cbr(cin, w, 3, 2))
                cin, side = w, (side + 1) // 2
            self.encoder = nn.Sequential(*layers)
            self.enc_channels = cin
            self.merge = nn.Sequential(Bottleneck(cin + w, w), Bottleneck(w, w))
        self.head = nn.Conv2d(w, 1, 3, 1, 1)

    @staticmethod
    def _up(w: int) -> nn.Sequential:
        return nn.Sequential(nn.ConvTranspose2d(w, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())

    @staticmethod
    def _fit(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        if x.shape[-2] > size[0]:
            return F.adaptive_avg_pool2d(x, size)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def forward(self, feats: dict[str, torch.Tensor], cls: torch.Tensor, image: Optional[torch.Tensor] = None) -> torch.Tensor:
        plan = self.plan
        if plan["mode"] == "conv":
            deep = feats[plan["taps"][0]["name"]].float()
            y = self.stem(self.filter(deep, cls))
            for name, up, skip, block in zip(self.up_names, self.ups, self.skips, self.blocks):
                s = feats[name].float()
                y = self._fit(up(y), tuple(s.shape[-2:]))
                y = block(torch.cat([y, skip(s)], dim=1))
            for m in self.extra_ups:
                y = m(y)
            y = self._fit(y, self.coarse)
            if self.fine_block is not None:
                parts = [y] + [proj(F.adaptive_avg_pool2d(feats[n].float(), self.coarse)) for n, proj in zip(self.fine_names, self.fine)]
                y = self.fine_block(torch.cat(parts, dim=1))
        else:
            if image is None:
                raise RuntimeError("the vector-mode generator needs the (normalised) image")
            v = feats[plan["vector"]["name"]].float()
            g = self.vec(self.filter(v, cls))
            e = self._fit(self.encoder(image.float()), self.coarse)
            y = self.merge(torch.cat([e, g[:, :, None, None].expand(-1, -1, *self.coarse)], dim=1))
        return self.head(y)


def init_generator(gen: nn.Module, seed: int) -> nn.Module:
    """Deterministic initialisation from ``seed`` (no global RNG): Kaiming for convolutions and
    linear layers, N(0, 1/C) for the class embedding, BN at (1, 0)."""
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for m in gen.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=g)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
            elif isinstance(m, FeatureFilter):
                c = m.embedding.shape[1]
                m.embedding.copy_(torch.randn(m.embedding.shape, generator=g) / math.sqrt(c))
    return gen


def generator_image(clf: Classifier, x01: torch.Tensor) -> torch.Tensor:
    """What the vector-mode generator's own encoder sees: the classifier's normalised input."""
    return clf.normalize(x01)


def generator_z(gen: MaskGenerator, clf: Classifier, x01: torch.Tensor, cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z, logits)``: the instance-normalised generator output (B, 1, h, w) and the classifier's logits."""
    with torch.no_grad():
        feats, logits = capture(clf, x01, gen.plan)
        feats = {k: v.detach() for k, v in feats.items()}
    img = generator_image(clf, x01) if gen.plan["mode"] == "vector" else None
    return instance_normalise(gen(feats, cls, img)), logits

