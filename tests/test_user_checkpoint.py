"""A user's own checkpoint; a hostile pickle is refused and its code never runs."""
from __future__ import annotations

import os
import pickle

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from explainers import load_classifier
from explainers.__main__ import main
from explainers.errors import ExplainerError


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def resnet18_3():
    from torchvision.models import resnet18

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return resnet18(weights=None, num_classes=3).eval()


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_hostile_pickle_is_refused_and_never_runs(tmp_path, how):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"state_dict": {"fc.weight": _Evil(marker)}}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(ExplainerError, match="refusing to unpickle"):
        load_classifier(str(path), arch="resnet18", device="cpu")
    assert not marker.exists()


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
    img = Image.new("RGB", (64, 48), (10, 200, 30))
    with torch.no_grad():
        torch.testing.assert_close(clf.net(clf.transform(img)[None]), resnet18_3(clf.transform(img)[None]))
    assert len(clf.predict(img, topk=2)) == 2


def test_torchscript_loads(tmp_path, resnet18_3):
    path = tmp_path / "scripted.pt"
    torch.jit.script(resnet18_3).save(str(path))
    clf = load_classifier(str(path), device="cpu")
    assert clf.num_classes == 3


def test_bad_checkpoints_are_one_line_errors(tmp_path, resnet18_3, capsys):
    sd_path = tmp_path / "sd.pth"
    torch.save(resnet18_3.state_dict(), sd_path)
    cases = [
        ((str(tmp_path / "missing.pth"),), {"arch": "resnet18"}, "no such"),
        ((str(sd_path),), {}, "--arch"),
        ((str(sd_path),), {"arch": "vgg11"}, "does not fit"),
        ((str(sd_path),), {"arch": "no_such_arch"}, "unknown torchvision architecture"),
    ]
    for args, kw, words in cases:
        with pytest.raises(ExplainerError, match=words) as e:
            load_classifier(*args, device="cpu", **kw)
        assert "\n" not in str(e.value)
    img = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(img)
    assert main(["predict", "--model", str(sd_path), "--image", str(img), "--device", "cpu"]) == 2
    assert "--arch" in capsys.readouterr().err
    assert main(["predict", "--model", str(sd_path), "--arch", "resnet18", "--image", str(img), "--device", "cpu"]) == 0
