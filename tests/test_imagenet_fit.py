"""Fits from a folder of images for a torchvision model (random weights stand in for the
download, saved under the hub cache's file name), through the command line, then used by the methods.

Tiny fits (seconds): what is tested is the path — folder in, progress, checkpoint, fitted file
found by the method — not the quality of the fit.
"""
import numpy as np
import pytest
import torch
from PIL import Image

import explainers
from explainers import __main__ as cli
from explainers.classifiers import torchvision_zoo


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet_fit")
    mp = pytest.MonkeyPatch()
    mp.setitem(torchvision_zoo.MODELS, "tv-resnet18", ("resnet18", "ResNet-18 (random weights, test)"))
    mp.setenv("TORCH_HOME", str(root / "torch"))
    mp.setenv("EXPLAINERS_HOME", str(root / "home"))
    mp.setenv("EXPLAINERS_OFFLINE", "1")
    path = torchvision_zoo.weight_file("tv-resnet18")
    path.parent.mkdir(parents=True)
    torch.save(torchvision_zoo.random_init("resnet18", seed=0).net.state_dict(), path)
    rng = np.random.default_rng(0)
    for cls in ("n01440764", "n01443537"):
        (root / "data" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (240, 260, 3), dtype=np.uint8)).save(root / "data" / cls / f"{i}.png")
    torch.set_num_threads(1)
    yield root
    mp.undo()


def fit(env, explainer, *sets, capsys=None):
    argv = ["fit", "--explainer", explainer, "--model", "tv-resnet18", "--data", str(env / "data")]
    for s in sets:
        argv += ["--set", s]
    return cli.main(argv)


def test_mipin_fit_from_folder_then_explain(env):
    assert fit(env, "mipin", "classes=0,1", "positions=4", "holdout=0", "batch_size=3") == 0
    clf = explainers.load_classifier("tv-resnet18", device="cpu")
    r = explainers.explain(clf, torch.rand(3, 224, 224), "mipin", target=1)
    assert r.maps["attribution"].shape == (224, 224) and np.isfinite(r.maps["attribution"]).all()


def test_varsal_fit_from_folder_then_explain(env):
    assert fit(env, "varsal", "steps=2", "batch_size=2", "val_size=2", "eval_every=1", "checkpoint_every=1") == 0
    clf = explainers.load_classifier("tv-resnet18", device="cpu")
    r = explainers.explain(clf, torch.rand(3, 224, 224), "varsal", mode="amortised", target=1)
    assert r.maps["mean"].shape == (224, 224) and np.isfinite(r.maps["mean"]).all()


def test_dcontrol_fit_from_folder_then_explain(env):
    assert fit(env, "dcontrol", "epochs=1", "batch_size=3", "width=4", "filter_steps=1", "val_size=2",
               "checkpoint_every=1") == 0
    clf = explainers.load_classifier("tv-resnet18", device="cpu")
    r = explainers.explain(clf, torch.rand(3, 224, 224), "dcontrol", generator="fitted", finetune_samples=1,
                           iterations=1, target=1)
    assert r.maps["mask"].shape == (224, 224) and np.isfinite(r.maps["mask"]).all()


def test_patchsampler_fit_from_folder_then_pmi_uses_it(env, tiny_cnn):
    assert fit(env, "patchsampler", "K=8", "steps=2", "width=4", "batch=2", "gaussian_patches=50",
               "checkpoint_every=1") == 0
    clf = tiny_cnn(side=32)  # the sampler is fitted per data, not per classifier: a small one runs PMI fast
    folder = env / "data"
    for given in (str(folder), folder.name):  # the folder itself, or the key its fit was filed under
        r = explainers.explain(clf, torch.rand(3, 32, 32), "pmi-ig", target=1, K=8, stride=8, N=1,
                               sampler="patchsampler", sampler_data=given)
        assert r.maps["pmi"].shape == (32, 32) and np.isfinite(r.maps["pmi"]).all()
        assert r.meta["sampler_data"] == folder.name
