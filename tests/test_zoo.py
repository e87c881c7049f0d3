"""torchvision models offline: unavailable with a reason, then available from a file in the hub cache.

No internet: a randomly initialised checkpoint of the real architecture is placed under the
expected file name in a temporary TORCH_HOME (VGG is skipped: too big for a test).
"""
from __future__ import annotations

import re
import socket
import time

import pytest
import torch
from PIL import Image

from explainers import list_classifiers, load_classifier
from explainers.classifiers import torchvision_zoo
from explainers.errors import ExplainerError


@pytest.fixture
def offline_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("EXPLAINERS_OFFLINE", "1")
    return tmp_path


def _random_state(arch: str, **kw) -> tuple[torch.nn.Module, dict]:
    from torchvision.models import get_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = get_model(arch, weights=None, **kw).eval()
    return net, net.state_dict()


def _place(model_id: str, state: dict):
    path = torchvision_zoo.weight_file(model_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def test_all_unavailable_offline_with_one_line_reason(offline_home):
    torchvision_zoo.entries()  # the first call pays for importing torchvision.models
    t = time.perf_counter()
    torchvision_zoo.entries()
    assert time.perf_counter() - t < 0.5  # disk checks only
    rows = [r for r in list_classifiers() if r.family == "torchvision"]
    assert {r.id for r in rows} == set(torchvision_zoo.MODELS) and len(rows) == 7
    for r in rows:
        assert not r.available and "\n" not in r.reason and r.input_size == 224
        assert str(offline_home / "hub" / "checkpoints") in r.reason and f"--download {r.id}" in r.reason
    for mid in ("tv-resnet50", "tv-vgg16"):
        t = time.perf_counter()
        with pytest.raises(ExplainerError, match="unavailable") as e:
            load_classifier(mid, device="cpu")
        assert time.perf_counter() - t < 5 and "\n" not in str(e.value)


def test_file_names_come_from_the_weights_urls(offline_home):
    from torchvision.models import get_weight

    for mid, (arch, _) in torchvision_zoo.MODELS.items():
        url = get_weight(f"{type(torchvision_zoo._weights(mid)).__name__}.IMAGENET1K_V1").url
        assert torchvision_zoo.weight_file(mid).name == url.rsplit("/", 1)[1]
        assert re.match(rf"{arch.replace('_', '.?')}-[0-9a-f]+\.pth$", torchvision_zoo.weight_file(mid).name), mid


@pytest.mark.parametrize("model_id, arch", [("tv-mobilenet_v3_small", "mobilenet_v3_small"), ("tv-resnet34", "resnet34")])
def test_checkpoint_in_the_hub_cache_makes_it_available(offline_home, model_id, arch):
    ref, state = _random_state(arch)
    _place(model_id, state)
    row = {r.id: r for r in list_classifiers()}[model_id]
    assert row.available and row.reason == ""
    clf = load_classifier(model_id, device="cpu")
    assert clf.input_size == (224, 224) and clf.resize == 256 and clf.family == "torchvision"
    assert len(clf.labels) == 1000 and clf.labels[0] == "tench" and clf.num_classes == 1000
    assert clf.mean == (0.485, 0.456, 0.406) and clf.std == (0.229, 0.224, 0.225)
    assert not clf.net.training and not any(p.requires_grad for p in clf.net.parameters())
    img = Image.new("RGB", (300, 200), (120, 60, 30))
    x = clf.transform(img)
    assert x.shape == (3, 224, 224)
    with torch.no_grad():
        out = clf.net(x[None])
        assert out.shape == (1, 1000)
        torch.testing.assert_close(out, ref(x[None]))  # the file's weights, not a fresh init


def test_googlenet_and_densenet_checkpoint_quirks(offline_home):
    """GoogLeNet's file carries aux heads (dropped) and wants transform_input; DenseNet's has old keys."""
    _, g_state = _random_state("googlenet", aux_logits=True, init_weights=True)
    assert any(k.startswith("aux1.") for k in g_state)
    _place("tv-googlenet", g_state)
    g = load_classifier("tv-googlenet", device="cpu")
    assert g.net.transform_input is True and g.net.aux_logits is False and g.net.aux1 is None

    d_ref, d_state = _random_state("densenet121")
    # torchvision's file: 'norm.1'-style keys and, being older than BatchNorm's counter, no num_batches_tracked
    old = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v
           for k, v in d_state.items() if not k.endswith("num_batches_tracked")}
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    _place("tv-densenet121", old)
    d = load_classifier("tv-densenet121", device="cpu")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(d.net(x), d_ref(x))
        assert g.net(x).shape == (1, 1000)


def test_garbage_or_mismatched_file_is_a_one_line_error(offline_home):
    path = torchvision_zoo.weight_file("tv-mobilenet_v3_small")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ExplainerError) as e:
        load_classifier("tv-mobilenet_v3_small", device="cpu")
    assert "\n" not in str(e.value) and path.name in str(e.value)

    _, state = _random_state("mobilenet_v3_small")
    wrong = _place("tv-resnet34", state)  # another architecture's weights under resnet34's name
    with pytest.raises(ExplainerError, match="does not match") as e:
        load_classifier("tv-resnet34", device="cpu")
    assert "\n" not in str(e.value) and wrong.name in str(e.value)

    torch.save({"a": [1, 2]}, wrong)
    with pytest.raises(ExplainerError, match="not a state dict"):
        load_classifier("tv-resnet34", device="cpu")


def test_download_failure_is_fast_and_one_line(tmp_path, monkeypatch):
    """Online mode with no network: the downloader's failure becomes one line; no real network use."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("EXPLAINERS_OFFLINE", raising=False)
    seen = {}

    def no_network(url, dst, hash_prefix=None, progress=True):
        seen.update(url=url, dst=dst, hash=hash_prefix, timeout=socket.getdefaulttimeout())
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    before = socket.getdefaulttimeout()
    with pytest.raises(ExplainerError, match="download failed") as e:
        load_classifier("tv-mobilenet_v3_small", device="cpu")
    assert "\n" not in str(e.value)
    assert seen["timeout"] is not None and seen["timeout"] <= 10 and socket.getdefaulttimeout() == before
    assert seen["url"].startswith("https://download.pytorch.org/") and seen["hash"] and seen["hash"] in seen["url"]
    assert seen["dst"] == str(torchvision_zoo.weight_file("tv-mobilenet_v3_small"))

    monkeypatch.setenv("EXPLAINERS_OFFLINE", "1")
    with pytest.raises(ExplainerError, match="EXPLAINERS_OFFLINE"):
        torchvision_zoo.download("tv-mobilenet_v3_small")
    with pytest.raises(ExplainerError, match="unknown torchvision model"):
        torchvision_zoo.download("tv-nope")


def test_download_then_load(tmp_path, monkeypatch):
    """When the downloader succeeds the file lands in the hub cache and the model loads from it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("EXPLAINERS_OFFLINE", raising=False)
    _, state = _random_state("mobilenet_v3_small")
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda url, dst, hash_prefix=None, progress=True: torch.save(state, dst))
    clf = load_classifier("tv-mobilenet_v3_small", device="cpu")
    assert clf.num_classes == 1000 and torchvision_zoo.weight_file("tv-mobilenet_v3_small").is_file()
    assert {r.id: r for r in list_classifiers()}["tv-mobilenet_v3_small"].available
