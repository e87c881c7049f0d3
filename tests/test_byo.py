"""Bring your own network: a custom architecture (a ``Conv2d`` subclass with "same" padding,
depthwise convolutions, ReLU6, not one ``nn.Sequential``) from the models folder, as TorchScript,
as ``torch.export`` and as an upload. Every method either gives a map of the right shape or is
marked unavailable in advance with its reason; bad files give one line naming the problem."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from explainers import METHODS, explain, load_classifier, list_classifiers
from explainers.__main__ import main
from explainers.availability import method_status
from explainers.classifiers import uploads
from explainers.diskcache import classifier_digest
from explainers.errors import ExplainerError

FIXTURE = Path(__file__).parent / "fixtures" / "custom_net.py"
SIZE = 32
# fast settings: the smallest work that still runs each method's whole code path
FAST = {
    "pmi-ig": {"K": 8, "stride": 8, "N": 2},
    "dssr": {"iterations": 4},
    "varsal": {"steps": 2, "n_mc": 2, "n_samples": 0},
    "dcontrol": {"iterations": 2, "backgrounds": 2, "finetune_samples": 4},
    "occlusion": {"window": 8, "stride": 8},
    "integrated-gradients": {"steps": 4},
    "rise": {"masks": 16, "batch_size": 16},
}
IMG = Image.fromarray((np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8))


def _module():
    spec = importlib.util.spec_from_file_location("custom_net_fixture", FIXTURE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _net(seed: int = 0) -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = _module().build().eval()
        for m in net.modules():  # batch norm with non-trivial statistics
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return net


def _state(net) -> dict:
    return {k: v.contiguous() for k, v in net.state_dict().items()}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A models folder holding the custom net three ways; EXPLAINERS_MODELS and a fresh EXPLAINERS_HOME."""
    d = tmp_path_factory.mktemp("models")
    net = _net()
    shutil.copy(FIXTURE, d / "custom.py")
    save_file(_state(net), str(d / "custom.safetensors"))
    x = torch.rand(2, 3, SIZE, SIZE)
    ep = torch.export.export(net, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},))
    torch.export.save(ep, str(d / "custom_export.pt2"))
    (d / "custom_export.json").write_text(json.dumps({"input_size": SIZE}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(net), str(d / "custom_ts.pt"), _extra_files={"explainers.json": json.dumps({"input_size": SIZE})})
    mp = pytest.MonkeyPatch()
    mp.setenv("EXPLAINERS_MODELS", str(d))
    mp.setenv("EXPLAINERS_HOME", str(tmp_path_factory.mktemp("home")))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield d, net
    torch.set_num_threads(threads)
    mp.undo()


def test_the_models_folder_is_listed_by_stem(folder):
    rows = {e.id: e for e in list_classifiers() if e.family == "user"}
    assert {"custom", "custom_export", "custom_ts"} <= set(rows)
    assert all(rows[k].available for k in ("custom", "custom_export", "custom_ts"))


@pytest.mark.parametrize("model", ["custom", "custom_export", "custom_ts"])
def test_each_way_in_gives_the_networks_logits(folder, model):
    _, net = folder
    clf = load_classifier(model, device="cpu")
    assert clf.id == model and clf.input_size == (SIZE, SIZE)
    x = torch.rand(3, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(clf.net(x), net(x), atol=1e-5)
    if model == "custom":  # META of the code: labels
        assert clf.labels[:2] == ["cat", "dog"]


@pytest.mark.parametrize("model", ["custom", "custom_export", "custom_ts"])
def test_every_method_gives_a_map_or_is_marked_in_advance(folder, model):
    clf = load_classifier(model, device="cpu")
    marks = {s.method: s for s in method_status(clf)}
    assert set(marks) == set(METHODS)
    for m in sorted(METHODS):
        if not marks[m].available:
            assert marks[m].reason, m
            with pytest.raises(ExplainerError):  # the mark is true: the run fails at once, with that reason
                explain(clf, IMG, m, **FAST.get(m, {}))
            continue
        r = explain(clf, IMG, m, **FAST.get(m, {}))
        for name, arr in r.maps.items():
            assert arr.shape == (SIZE, SIZE) and np.isfinite(arr).all(), (m, name)
    # the layer methods: hooks work on the models-folder and the exported network; TorchScript hides layers
    assert marks["gradcam"].available == (model != "custom_ts")
    if model == "custom_ts":
        assert "TorchScript" in marks["gradcam"].reason and "models folder" in marks["gradcam"].reason
    if not marks["mipin"].available:
        assert "mipin" in marks["mipin"].reason


def test_missing_fits_are_told_with_the_command(folder):
    clf = load_classifier("custom", device="cpu")
    from explainers.cost import Rates

    marks = {s.method: s for s in method_status(clf, ["varsal", "dcontrol"], rates=Rates(100.0, 10.0))}
    for m in ("varsal", "dcontrol"):
        assert marks[m].available and f"fit --explainer {m} --model custom" in marks[m].fit_command
        assert marks[m].fit_seconds and marks[m].fit_seconds > 0


def _gradcam_reference(net, x01, clf, target):
    """Grad-CAM by hand on ``net.blocks`` (the last 4-D activation before the global pooling)."""
    x = clf.normalize(x01)
    a = net.blocks(net.stem(x)).detach().requires_grad_(True)
    logit = net.head(F.adaptive_avg_pool2d(a, 1).flatten(1))[0, target]
    (g,) = torch.autograd.grad(logit, a)
    cam = F.relu((g.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))
    return F.interpolate(cam, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[0, 0].detach().numpy()


def test_gradcam_picks_the_last_spatial_activation_by_output(folder):
    from explainers.methods.baselines import gradcam_layer

    _, net = folder
    clf = load_classifier("custom", device="cpu")
    assert gradcam_layer(clf.net) is clf.net.blocks  # not the last Conv2d (1x1) nor a Conv2dSame by class
    x01 = clf.pixels(IMG).unsqueeze(0)
    r = explain(clf, IMG, "gradcam", target=1)
    ref = _gradcam_reference(clf.net, x01, clf, 1)
    assert np.allclose(r.maps["gradcam"], ref, atol=1e-5)
    # the exported network (unflattened InterpreterModules) gives the same map
    e = explain(load_classifier("custom_export", device="cpu"), IMG, "gradcam", target=1)
    assert np.allclose(e.maps["gradcam"], ref, atol=1e-5)
    assert not clf.net._forward_hooks and not any(m._forward_hooks for m in clf.net.modules())


def test_gradcam_layer_on_torchvision_architectures():
    from torchvision.models import get_model

    from explainers.methods.layers import last_spatial

    with torch.device("cpu"):
        r18 = get_model("resnet18", weights=None).eval()
        mb = get_model("mobilenet_v3_small", weights=None).eval()
    assert last_spatial(r18, (64, 64))[0] == "layer4"
    assert last_spatial(mb, (64, 64))[0] == "features"


# ------------------------------------------------------------------------------------ bad files
def _write(d: Path, name: str, code: str, state=None, suffix=".safetensors"):
    (d / f"{name}.py").write_text(code)
    if state is not None:
        if suffix == ".safetensors":
            save_file(state, str(d / f"{name}{suffix}"))
        else:
            torch.save(state, d / f"{name}{suffix}")


GOOD = FIXTURE.read_text()


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("case, expect", [
    ("no_build", "defines no build() function"),
    ("import_error", "fails on import (ZeroDivisionError"),
    ("not_a_module", "build() must return a torch.nn.Module"),
    ("missing_key", "missing keys head.bias"),
    ("unexpected_key", "unexpected keys extra.weight"),
    ("wrong_shape", "head.weight is (7, 24) in the file but (5, 24) in the model"),
    ("bad_meta_std", "bad META (std must be three positive numbers"),
    ("bad_meta_key", "bad META (unknown key 'inputsize'"),
    ("bad_meta_size", "bad META (input_size must be"),
    ("labels_count", "3 labels given for a model with 5 classes"),
    ("no_weights", "no no_weights.safetensors or no_weights.pt beside"),
    ("evil_pickle", "refusing to unpickle"),
])
def test_bad_models_folder_files_give_one_line(tmp_path, monkeypatch, case, expect):
    monkeypatch.setenv("EXPLAINERS_MODELS", str(tmp_path))
    monkeypatch.setenv("EXPLAINERS_HOME", str(tmp_path / "home"))
    state = _state(_net())
    marker = tmp_path / "pwned"
    if case == "no_build":
        _write(tmp_path, case, GOOD.replace("def build():", "def make():"), state)
    elif case == "import_error":
        _write(tmp_path, case, GOOD + "\n1 / 0\n", state)
    elif case == "not_a_module":
        _write(tmp_path, case, GOOD + "\ndef build():\n    return 'a string'\n", state)
    elif case == "missing_key":
        _write(tmp_path, case, GOOD, {k: v for k, v in state.items() if k != "head.bias"})
    elif case == "unexpected_key":
        _write(tmp_path, case, GOOD, {**state, "extra.weight": torch.zeros(2)})
    elif case == "wrong_shape":
        _write(tmp_path, case, GOOD, {**state, "head.weight": torch.zeros(7, 24)})
    elif case == "bad_meta_std":
        _write(tmp_path, case, GOOD.replace('META = {', 'META = {"std": [0.2, -1, 0.2], '), state)
    elif case == "bad_meta_key":
        _write(tmp_path, case, GOOD.replace('META = {', 'META = {"inputsize": 32, '), state)
    elif case == "bad_meta_size":
        _write(tmp_path, case, GOOD.replace('"input_size": 32', '"input_size": "big"'), state)
    elif case == "labels_count":
        _write(tmp_path, case, GOOD.replace('["cat", "dog", "fox", "owl", "eel"]', '["a", "b", "c"]'), state)
    elif case == "no_weights":
        _write(tmp_path, case, GOOD)
        row = next(e for e in list_classifiers() if e.id == case)
        assert not row.available and expect in row.reason
    elif case == "evil_pickle":
        _write(tmp_path, case, GOOD, {"w": _Evil(marker)}, suffix=".pt")
    with pytest.raises(ExplainerError) as info:
        load_classifier(case, device="cpu")
    msg = str(info.value)
    assert expect in msg and "\n" not in msg, msg
    assert not marker.exists()


def test_the_cli_lists_a_models_folder_and_fails_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EXPLAINERS_MODELS", raising=False)
    monkeypatch.setenv("EXPLAINERS_HOME", str(tmp_path / "home"))
    d = tmp_path / "m"
    d.mkdir()
    _write(d, "mine", GOOD, _state(_net()))
    _write(d, "broken", GOOD.replace("def build():", "def make():"), _state(_net()))
    assert main(["models", "--models", str(d)]) == 0
    out = capsys.readouterr().out
    assert "mine" in out and "broken" in out
    img = tmp_path / "i.png"
    IMG.save(img)
    assert main(["predict", "--models", str(d), "--model", "mine", "--image", str(img), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "mine"
    assert main(["predict", "--models", str(d), "--model", "broken", "--image", str(img)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "defines no build() function" in err


def test_an_export_with_a_fixed_batch_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "fixed.pt2"
    torch.export.save(torch.export.export(_net(), (torch.rand(1, 3, SIZE, SIZE),)), str(path))
    path.with_suffix(".json").write_text(json.dumps({"input_size": SIZE}))
    with pytest.raises(ExplainerError, match="dynamic batch"):
        load_classifier(str(path), device="cpu")


# ------------------------------------------------------------------------------------ uploads
def _bytes(state) -> bytes:
    from safetensors.torch import save

    return save(state)


def test_an_upload_for_a_models_folder_architecture_loads_and_is_keyed_by_its_weights(folder):
    a, b = _bytes(_state(_net(0))), _bytes(_state(_net(1)))
    ida, idb = uploads.register(a, "custom", "a.safetensors"), uploads.register(b, "custom", "b.safetensors")
    assert ida != idb and ida.startswith("upload-custom-")
    ca, cb = load_classifier(ida, device="cpu"), load_classifier(idb, device="cpu")
    assert classifier_digest(ca) != classifier_digest(cb)
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(ca.net(x), _net(0)(x), atol=1e-5)
    r = explain(ca, IMG, "gradcam")
    assert r.maps["gradcam"].shape == (SIZE, SIZE)


def test_an_upload_for_a_torchvision_architecture_checks_shapes(folder):
    from torchvision.models import get_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = get_model("mobilenet_v3_small", weights=None, num_classes=3).eval()
    ok = uploads.register(_bytes(_state(net)), "mobilenet_v3_small", "mine.safetensors")
    assert load_classifier(ok, device="cpu").num_classes == 3
    bad = uploads.register(_bytes(_state(net)), "resnet18", "mine.safetensors")
    with pytest.raises(ExplainerError, match="does not fit architecture resnet18"):
        load_classifier(bad, device="cpu")


@pytest.mark.parametrize("data, expect", [
    (b"PK\x03\x04" + b"\0" * 64, "only safetensors weights can be uploaded, this is a zip"),
    (b"\x80\x04" + b"\0" * 64, "this is a pickle"),
])
def test_uploads_that_carry_code_are_refused(data, expect):
    with pytest.raises(ExplainerError, match=expect):
        uploads.register(data, "resnet18", "x.safetensors")


def test_the_upload_size_cap(monkeypatch):
    monkeypatch.setenv(uploads.MAX_MB_ENV, "0.001")
    with pytest.raises(ExplainerError, match="over the upload limit"):
        uploads.register(_bytes({"w": torch.zeros(1000)}), "resnet18", "big.safetensors")


# ------------------------------------------------------------------------------------ the app
def test_the_app_lists_a_models_folder_network_and_marks_its_methods(app, pages, tmp_path, monkeypatch):
    d = tmp_path / "models"
    d.mkdir()
    _write(d, "custom", GOOD, _state(_net()))
    monkeypatch.setenv("EXPLAINERS_MODELS", str(d))
    at = app(model_id="custom", **{"compare.methods": ["gradcam", "saliency", "mipin"]})
    a = pages.open(at, "pages/compare.py")
    assert not a.exception and not a.error, [e.value for e in a.error]
    assert a.session_state["ctx"].model_id == "custom"  # listed and loaded like the built-in ones
    assert len(a.get("plotly_chart")) == 2  # Grad-CAM and saliency drew their maps
    picker = a.multiselect(key="compare.methods")
    assert picker.format_func("mipin") == "mipin — unavailable"  # marked before anything runs
    assert any("mipin" in w.value and "cannot run" not in w.value for w in a.warning)  # its cell says why, not an error
    text = " ".join(m.value for m in a.markdown)
    assert "**mipin** unavailable" in text and "**gradcam** available" in text


def test_a_lone_state_dict_in_the_models_folder_asks_for_its_code(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLAINERS_MODELS", str(tmp_path))
    monkeypatch.setenv("EXPLAINERS_HOME", str(tmp_path / "home"))
    torch.save(_state(_net()), tmp_path / "lonely.pt")  # a zip, but not TorchScript
    row = next(e for e in list_classifiers() if e.id == "lonely")
    assert not row.available and "put lonely.py with build() beside it" in row.reason
    with pytest.raises(ExplainerError, match="put lonely.py"):
        load_classifier("lonely", device="cpu")


class _Upload:
    """What ``st.file_uploader`` returns for a file (AppTest cannot drive the real widget)."""

    def __init__(self, data: bytes, name: str):
        self.data, self.name, self.file_id = data, name, f"id-{len(data)}-{name}"

    def getvalue(self) -> bytes:
        return self.data


@pytest.mark.parametrize("good", [True, False])
def test_the_sidebar_takes_an_uploaded_checkpoint_for_this_session(app, pages, tmp_path, monkeypatch, good):
    import streamlit as st

    d = tmp_path / "models"
    d.mkdir()
    _write(d, "custom", GOOD, _state(_net()))
    monkeypatch.setenv("EXPLAINERS_MODELS", str(d))
    data = _bytes(_state(_net(3))) if good else b"\x80\x04" + b"\0" * 64
    real = st.file_uploader

    def fake(label, *args, key=None, **kwargs):
        return _Upload(data, "mine.safetensors") if key == "sidebar.upload_weights" else real(label, *args, key=key, **kwargs)

    monkeypatch.setattr(st, "file_uploader", fake)
    a = app(**{"sidebar.upload_arch": "custom"}).run()
    assert not a.exception
    ctx = a.session_state["ctx"]
    if good:
        assert ctx.model_id.startswith("upload-custom-") and not a.sidebar.error
        assert list(a.session_state["sidebar.uploads"]) == [ctx.model_id]  # held by this session only
    else:
        assert not ctx.model_id.startswith("upload-")
        errors = [e.value for e in a.sidebar.error]
        assert len(errors) == 1 and "only safetensors weights can be uploaded, this is a pickle" in errors[0]
