"""A user's own checkpoint; a hostile pickle is refused and its code never runs."""
from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from explainers import load_classifier
from explainers.__main__ import main
from explainers.classifiers.user import load_checkpoint
from explainers.errors import ExplainerError


class _Evil:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvilWrite:
    """Same, through a Python builtin instead of a shell: ``open(marker, 'w')``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _net(arch: str, **kw) -> torch.nn.Module:
    from torchvision.models import get_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return get_model(arch, weights=None, **kw).eval()


@pytest.fixture(scope="module")
def resnet18_3():
    return _net("resnet18", num_classes=3)


IMG = Image.new("RGB", (64, 48), (10, 200, 30))


@pytest.mark.parametrize("how", ["torch.save", "pickle", "pickle-open", "pickle-bare"])
@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin", ".safetensors"])
def test_hostile_pickle_is_refused_and_never_runs(tmp_path, how, suffix):
    marker = tmp_path / "pwned"
    path = tmp_path / f"evil{suffix}"
    evil = _EvilWrite(marker) if how == "pickle-open" else _Evil(marker)
    payload = evil if how == "pickle-bare" else {"state_dict": {"fc.weight": evil, "fc.bias": torch.zeros(3)}}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(ExplainerError) as e:
        load_classifier(str(path), arch="resnet18", device="cpu")
    msg = str(e.value)
    assert "\n" not in msg
    if suffix != ".safetensors":
        assert "refusing to unpickle" in msg and "not a plain state dict" in msg
    assert not marker.exists()


@pytest.mark.parametrize("container, suffix", [("plain", ".bin"), ("state_dict", ".pth"), ("model", ".pt"), ("module.", ".pth"),
                                               ("nested+extras", ".pth")])
def test_plain_state_dict_containers(tmp_path, resnet18_3, suffix, container):
    sd = resnet18_3.state_dict()
    obj = {
        "plain": sd,
        "state_dict": {"state_dict": sd},
        "model": {"model": sd},
        "module.": {f"module.{k}": v for k, v in sd.items()},
        "nested+extras": {"model": {"state_dict": sd}, "epoch": 9, "best_acc": torch.tensor(0.9), "names": ["a"]},
    }[container]
    path = tmp_path / f"mine{suffix}"
    torch.save(obj, path)
    clf = load_classifier(str(path), arch="resnet18", device="cpu")
    assert clf.num_classes == 3
    got = clf.net.state_dict()
    assert got.keys() == sd.keys() and all(torch.equal(got[k], v) for k, v in sd.items())


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_state_dict_loads_and_predicts(tmp_path, resnet18_3, suffix):
    path = tmp_path / f"mine{suffix}"
    sd = {k: v.contiguous() for k, v in resnet18_3.state_dict().items()}
    if suffix == ".pth":
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    else:
        save_file(sd, str(path))
    clf = load_classifier(str(path), arch="resnet18", device="cpu")
    assert clf.labels == ["class 0", "class 1", "class 2"] and clf.family == "user"
    assert clf.input_size == (224, 224) and clf.resize == 256 and clf.mean == (0.485, 0.456, 0.406)
    assert not clf.net.training and not any(p.requires_grad for p in clf.net.parameters())
    with torch.no_grad():
        torch.testing.assert_close(clf.net(clf.transform(IMG)[None]), resnet18_3(clf.transform(IMG)[None]))
    top = clf.predict(IMG, topk=2)
    assert len(top) == 2 and top[0][1].startswith("class ")


def test_num_classes_from_other_heads(tmp_path):
    """The class count comes from the output layer whatever its kind (Linear, 1x1 conv) or key order."""
    for arch, n in [("squeezenet1_1", 5), ("mobilenet_v3_small", 4)]:
        net = _net(arch, num_classes=n)
        path = tmp_path / f"{arch}.safetensors"  # safetensors stores keys sorted, not in module order
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
        clf = load_checkpoint(path, arch=arch, labels=[f"c{i}" for i in range(n)])
        assert clf.num_classes == n and clf.labels[0] == "c0"
        x = torch.rand(1, 3, 96, 96)
        with torch.no_grad():
            torch.testing.assert_close(clf.net(x), net(x))


def test_1000_classes_get_imagenet_labels(tmp_path):
    path = tmp_path / "m.pth"
    torch.save(_net("mobilenet_v3_small").state_dict(), path)
    clf = load_checkpoint(path, arch="mobilenet_v3_small")
    assert clf.num_classes == 1000 and clf.labels[0] == "tench"


def test_torchscript_loads(tmp_path, resnet18_3):
    path = tmp_path / "scripted.pt"
    torch.jit.script(resnet18_3).save(str(path))
    clf = load_classifier(str(path), device="cpu")
    assert clf.num_classes == 3 and clf.family == "user" and clf.info["kind"] == "torchscript"
    assert clf.input_size == (224, 224) and clf.resize == 256
    x = clf.transform(IMG)[None]
    with torch.no_grad():
        torch.testing.assert_close(clf.net(x), resnet18_3(x))
    # traced, with no suffix at all, and with metadata that changes the preprocessing
    tiny = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
    traced = tmp_path / "traced_model"
    meta = {"input_size": [32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "labels": ["cat", "dog", "eel"]}
    torch.jit.save(torch.jit.trace(tiny, torch.rand(1, 3, 32, 32)), str(traced), _extra_files={"explainers.json": json.dumps(meta)})
    clf = load_classifier(str(traced), device="cpu")
    assert clf.input_size == (32, 32) and clf.resize is None and clf.labels == ["cat", "dog", "eel"]
    assert clf.mean == (0.5, 0.5, 0.5) and clf.transform(IMG).shape == (3, 32, 32)


def test_safetensors_metadata(tmp_path, resnet18_3):
    path = tmp_path / "m.safetensors"
    sd = {k: v.contiguous() for k, v in resnet18_3.state_dict().items()}
    save_file(sd, str(path), metadata={"explainers": json.dumps({"input_size": 64, "resize": 72, "labels": ["a", "b", "c"]})})
    clf = load_checkpoint(path, arch="resnet18")
    assert clf.input_size == (64, 64) and clf.resize == 72 and clf.labels == ["a", "b", "c"]
    save_file(sd, str(path), metadata={"explainers": "{not json"})
    with pytest.raises(ExplainerError, match="metadata"):
        load_checkpoint(path, arch="resnet18")


def test_bad_checkpoints_are_one_line_errors(tmp_path, resnet18_3, capsys):
    sd_path = tmp_path / "sd.pth"
    torch.save(resnet18_3.state_dict(), sd_path)
    scripted = tmp_path / "needs_one_channel.pt"
    torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten())).save(str(scripted))
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(sd_path.read_bytes()[:5000])
    not_sd = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_sd)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    cases = [
        ((str(tmp_path / "missing.pth"),), {"arch": "resnet18"}, "no such"),
        ((str(sd_path),), {}, "--arch"),
        ((str(sd_path),), {"arch": "vgg11"}, "does not fit"),
        ((str(sd_path),), {"arch": "resnet34"}, "does not fit"),
        ((str(sd_path),), {"arch": "resnet_18"}, "unknown torchvision architecture 'resnet_18'; did you mean resnet18"),
        ((str(sd_path),), {"arch": "fasterrcnn_resnet50_fpn"}, "unknown torchvision architecture"),
        ((str(sd_path),), {"arch": "resnet18", "labels": ["a", "b"]}, "2 labels given for a model with 3 classes"),
        ((str(scripted),), {}, "fails on a 1x3x224x224 image"),
        ((str(truncated),), {"arch": "resnet18"}, "not a readable PyTorch checkpoint"),
        ((str(not_sd),), {"arch": "resnet18"}, "not a state dict"),
        ((str(empty),), {"arch": "resnet18"}, "empty"),
    ]
    for args, kw, words in cases:
        with pytest.raises(ExplainerError) as e:
            load_classifier(*args, device="cpu", **kw)
        assert words in str(e.value) and "\n" not in str(e.value), (words, str(e.value))
    img = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(img)
    assert main(["predict", "--model", str(sd_path), "--image", str(img), "--device", "cpu"]) == 2
    assert "--arch" in capsys.readouterr().err
    assert main(["predict", "--model", str(sd_path), "--arch", "resnet18", "--image", str(img), "--device", "cpu"]) == 0
