"""The embedded classifiers: small networks trained by ``python -m explainers.training.classifiers``
on the built-in datasets, weights committed under ``assets/classifiers/`` (safetensors + JSON).

Architectures are plain ``nn.Sequential`` stacks where the MIP-IN paper needs them (VGG-style CNN,
MLP and CNN on digits: conv / linear / ReLU / max-pool / flatten only), and a small ResNet for the
default. Sizes are chosen so that the explainers stay interactive on a 2-core CPU at 64x64.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "classifiers"


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """ResNet-style: stride-2 stem, three stages of basic blocks (the last two stride 2), global
    average pool, linear. At 64x64 the last feature map is 8x8; about 8 M multiply-adds a forward.

    ``features`` ends at the last convolutional feature map (used by Grad-CAM, the distribution
    controller's generator and MIP-IN's classifier-head inversion); ``classifier`` maps pooled
    features to logits.
    """

    def __init__(self, num_classes: int, width: int = 16, in_channels: int = 3):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, 2, 1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            BasicBlock(w, w, 1),
            BasicBlock(w, 2 * w, 2),
            BasicBlock(2 * w, 4 * w, 2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


def vgg_small(num_classes: int, in_channels: int = 3, input_size: int = 64, batch_norm: bool = False) -> nn.Module:
    """VGG-style: 3x3 conv + ReLU blocks with 2x2 max-pooling, then two dense layers.

    Trained with batch norm after each conv (``batch_norm=True``), then the BN is folded into the
    conv weights (:func:`fold_batchnorm`), so the committed network is Conv/ReLU/MaxPool/Linear
    only, the layer types MIP-IN inverts.
    """
    cfg = [16, "M", 32, "M", 64, "M", 64, 64, "M"]
    layers: list[nn.Module] = []
    c = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, int(v), 3, 1, 1)] + ([nn.BatchNorm2d(int(v))] if batch_norm else []) + [nn.ReLU()]
            c = int(v)
    side = input_size // 16
    features = nn.Sequential(*layers)
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(c * side * side, 128), nn.ReLU(), nn.Linear(128, num_classes))
    return nn.Sequential(features, classifier)


@torch.no_grad()
def fold_batchnorm(trained: nn.Module, plain: nn.Module) -> nn.Module:
    """Copy ``trained`` (Conv2d → BatchNorm2d pairs) into ``plain`` (the same net without BN), folding
    each BN's eval-mode statistics into the conv before it: W' = W·γ/σ, b' = (b − μ)·γ/σ + β."""
    leaves = [m for m in trained.modules() if len(list(m.children())) == 0]
    values: list[torch.Tensor] = []
    k = 0
    while k < len(leaves):
        m = leaves[k]
        if isinstance(m, nn.Conv2d) and k + 1 < len(leaves) and isinstance(leaves[k + 1], nn.BatchNorm2d):
            bn = leaves[k + 1]
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            bias = m.bias if m.bias is not None else torch.zeros_like(bn.running_mean)
            values += [m.weight * scale.view(-1, 1, 1, 1), (bias - bn.running_mean) * scale + bn.bias]
            k += 2
        else:
            values += list(m.parameters(recurse=False))
            k += 1
    params = list(plain.parameters())
    if [p.shape for p in params] != [v.shape for v in values]:
        raise ValueError("fold_batchnorm: the plain network does not match the trained one")
    for p, v in zip(params, values):
        p.copy_(v)
    return plain


def mlp(num_classes: int, input_size: int = 28, in_channels: int = 1) -> nn.Module:
    """Dense ReLU network on the flattened image (the MIP-IN paper's MNIST MLP, smaller)."""
    d = in_channels * input_size * input_size
    return nn.Sequential(
        nn.Flatten(), nn.Linear(d, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, num_classes)
    )


def cnn_small(num_classes: int, input_size: int = 28, in_channels: int = 1) -> nn.Module:
    """Two conv + ReLU + max-pool blocks and two dense layers (the MIP-IN paper's MNIST CNN)."""
    side = input_size // 4
    features = nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(16, 32, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2, 2),
    )
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * side * side, 128), nn.ReLU(), nn.Linear(128, num_classes))
    return nn.Sequential(features, classifier)


ARCHS = {"resnet-small": SmallResNet, "vgg-small": vgg_small, "mlp": mlp, "cnn-small": cnn_small}


@dataclass(frozen=True)
class EmbeddedSpec:
    id: str
    arch: str
    dataset: str  # built-in dataset the model is trained on
    title: str
    input_size: int
    grayscale: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    epochs: int
    seed: int = 0

    @property
    def weights(self) -> Path:
        return ASSETS / f"{self.id}.safetensors"

    @property
    def card(self) -> Path:
        return ASSETS / f"{self.id}.json"

    def build(self, num_classes: int, training: bool = False) -> nn.Module:
        """The network; ``training=True`` gives the trainable form (VGG with BN, folded after)."""
        in_ch = 1 if self.grayscale else 3
        if self.arch == "resnet-small":
            return SmallResNet(num_classes, in_channels=in_ch)
        if self.arch == "vgg-small":
            return vgg_small(num_classes, in_channels=in_ch, input_size=self.input_size, batch_norm=training)
        return ARCHS[self.arch](num_classes, in_channels=in_ch, input_size=self.input_size)


_RGB_MEAN, _RGB_STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
_GREY_MEAN, _GREY_STD = (0.13, 0.13, 0.13), (0.31, 0.31, 0.31)

EMBEDDED: dict[str, EmbeddedSpec] = {
    s.id: s
    for s in [
        EmbeddedSpec("shapes-resnet", "resnet-small", "shapes", "Shapes · ResNet-style CNN (default)", 64, False, _RGB_MEAN, _RGB_STD, 10),
        EmbeddedSpec("shapes-vgg", "vgg-small", "shapes", "Shapes · VGG-style CNN (max-pooling)", 64, False, _RGB_MEAN, _RGB_STD, 18),
        EmbeddedSpec("shapes-biased-resnet", "resnet-small", "shapes-biased", "Shapes, biased data · ResNet-style CNN (learns the tag shortcut)", 64, False, _RGB_MEAN, _RGB_STD, 10),
        EmbeddedSpec("digits-mlp", "mlp", "digits", "Digits · MLP", 28, True, _GREY_MEAN, _GREY_STD, 40),
        EmbeddedSpec("digits-cnn", "cnn-small", "digits", "Digits · CNN", 28, True, _GREY_MEAN, _GREY_STD, 25),
    ]
}
DEFAULT_CLASSIFIER = "shapes-resnet"


def load_embedded(model_id: str, device: torch.device):
    """Build the network and load its committed weights; returns a ``Classifier``."""
    from safetensors.torch import load_file

    from ..errors import ExplainerError
    from .base import Classifier

    spec = EMBEDDED[model_id]
    if not spec.weights.exists() or not spec.card.exists():
        raise ExplainerError(
            f"{model_id}: weights not found at {spec.weights}; train them with "
            f"`python -m explainers.training.classifiers --model {model_id}`"
        )
    card = json.loads(spec.card.read_text())
    net = spec.build(len(card["labels"]))
    net.load_state_dict(load_file(str(spec.weights)))
    net.to(device)
    return Classifier(
        id=model_id,
        net=net,
        labels=list(card["labels"]),
        input_size=(spec.input_size, spec.input_size),
        mean=spec.mean,
        std=spec.std,
        grayscale=spec.grayscale,
        dataset=spec.dataset,
        family="embedded",
        info={"title": spec.title, "arch": spec.arch, **{k: v for k, v in card.items() if k != "labels"}},
    )
