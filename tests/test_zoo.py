"""torchvision models offline: unavailable with a reason, then available from a file in the hub cache.

No internet: a randomly initialised checkpoint of the real architecture is placed under the
expected file name in a temporary TORCH_HOME.
"""
from __future__ import annotations

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


def test_all_unavailable_offline_with_one_line_reason(offline_home):
    rows = [r for r in list_classifiers() if r.family == "torchvision"]
    assert {r.id for r in rows} == set(torchvision_zoo.MODELS)
    for r in rows:
        assert not r.available and "\n" not in r.reason and str(offline_home) in r.reason
    t = time.perf_counter()
    with pytest.raises(ExplainerError, match="unavailable"):
        load_classifier("tv-resnet50", device="cpu")
    assert time.perf_counter() - t < 5


@pytest.mark.parametrize("model_id, arch", [("tv-mobilenet_v3_small", "mobilenet_v3_small"), ("tv-resnet34", "resnet34")])
def test_checkpoint_in_the_hub_cache_makes_it_available(offline_home, model_id, arch):
    from torchvision.models import get_model

    path = torchvision_zoo.weight_file(model_id)
    path.parent.mkdir(parents=True)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch.save(get_model(arch, weights=None).state_dict(), path)
    row = {r.id: r for r in list_classifiers()}[model_id]
    assert row.available and row.reason == ""
    clf = load_classifier(model_id, device="cpu")
    assert clf.input_size == (224, 224) and len(clf.labels) == 1000 and clf.labels[0] == "tench"
    img = Image.new("RGB", (300, 200), (120, 60, 30))
    x = clf.transform(img)
    assert x.shape == (3, 224, 224)
    assert clf.net(x[None]).shape == (1, 1000)


def test_garbage_file_is_a_one_line_error(offline_home):
    path = torchvision_zoo.weight_file("tv-mobilenet_v3_small")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ExplainerError) as e:
        load_classifier("tv-mobilenet_v3_small", device="cpu")
    assert "\n" not in str(e.value) and path.name in str(e.value)
