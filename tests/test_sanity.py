"""Sanity checks (Adebayo et al.): cascading randomisation top-down on a copy, correlations that fall
as layers are randomised, the shared model untouched, label sensitivity, the similarity measures."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from explainers import sanity
from explainers.classifiers.base import Classifier
from explainers.errors import ExplainerError


def tiny_classifier(seed: int = 0) -> Classifier:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(8 * 12 * 12, 16), nn.ReLU(), nn.Linear(16, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        net[1].running_mean.copy_(torch.randn(8, generator=g) * 0.1)
        net[1].running_var.fill_(2.0)
    return Classifier("tiny-sanity", net, ["a", "b", "c"], (12, 12))


def _state(clf):
    return {k: v.clone() for k, v in clf.net.state_dict().items()}


def test_layers_top_down_with_norms_grouped():
    clf = tiny_classifier()
    assert sanity.parameter_layers(clf) == [["8"], ["6"], ["3"], ["0", "1"]]


def test_randomisation_leaves_the_shared_model_alone():
    clf = tiny_classifier()
    before = _state(clf)
    x = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(1))
    res = sanity.cascading_randomisation(clf, x, "saliency")
    assert len(res.steps) == 5 and res.steps[0] == "original" and res.steps[1] == "8"
    after = clf.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not clf.net.training and not any(p.requires_grad for p in clf.net.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in clf.net.modules())


def test_reinitialisation_is_seeded_and_cumulative():
    clf = tiny_classifier()
    a = [(k, c.net.state_dict()) for k, _, c in sanity.randomised_copies(clf, seed=3)]
    b = [(k, c.net.state_dict()) for k, _, c in sanity.randomised_copies(clf, seed=3)]
    c = list(sanity.randomised_copies(clf, seed=4))
    orig = clf.net.state_dict()
    for (_, sa), (_, sb) in zip(a, b):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(a[-1][1]["0.weight"], c[-1][2].net.state_dict()["0.weight"])
    # step 1: only the top layer changed; step 2: the two top layers
    s1, s2 = a[0][1], a[1][1]
    assert not torch.equal(s1["8.weight"], orig["8.weight"]) and torch.equal(s1["6.weight"], orig["6.weight"])
    assert not torch.equal(s2["6.weight"], orig["6.weight"]) and torch.equal(s2["3.weight"], orig["3.weight"])
    assert torch.equal(s2["8.weight"], s1["8.weight"])  # cumulative: the top layer keeps its draw
    full = a[-1][1]
    assert torch.equal(full["1.weight"], torch.ones(8)) and torch.equal(full["1.running_var"], torch.ones(8))
    assert all(c2.id.startswith("tiny-sanity~randomised") for _, _, c2 in c)


@pytest.fixture(scope="module")
def digits_mlp():
    from explainers import load_classifier
    from explainers.classifiers.embedded import EMBEDDED

    if not EMBEDDED["digits-mlp"].weights.exists():
        pytest.skip("digits-mlp weights not trained yet")
    from explainers.data import load_dataset

    return load_classifier("digits-mlp", device="cpu"), load_dataset("digits", "test", limit=3)


@pytest.mark.parametrize("method", ["saliency", "integrated-gradients"])
def test_correlations_fall_as_layers_are_randomised(digits_mlp, method):
    clf, ds = digits_mlp
    for item in ds:
        res = sanity.cascading_randomisation(clf, item.image, method, target=item.label, seed=0)
        rho, ssim = res.spearman, res.ssim
        assert rho[0] == 1.0 and ssim[0] == 1.0
        assert len(rho) == 4  # original + 3 linear layers
        assert abs(rho[-1]) < 0.5 and ssim[-1] < 0.5  # the fully random net's map is another map
        assert np.all(rho[1:] < 0.9)  # and every randomisation moves it
        assert np.nanmean(np.abs(rho[2:])) < rho[0]


def test_label_sensitivity(digits_mlp):
    clf, ds = digits_mlp
    r = sanity.label_sensitivity(clf, ds[0].image, "saliency", target=ds[0].label)
    assert r["other"] != r["target"] == ds[0].label
    assert r["spearman"] < 0.9 and r["l2"] > 0
    with pytest.raises(ExplainerError):
        sanity.label_sensitivity(clf, ds[0].image, "saliency", target=0, other=0)


def test_similarity_reference_values():
    rng = np.random.default_rng(0)
    a = rng.random((20, 20))
    same = sanity.similarity(a, a)
    assert same["spearman"] == pytest.approx(1.0) and same["ssim"] == pytest.approx(1.0) and same["l2"] == 0
    flipped = sanity.similarity(a, -a)
    assert flipped["spearman"] == pytest.approx(-1.0) and flipped["ssim"] < 0
    assert sanity.similarity(a, -a, absolute=True)["spearman"] == pytest.approx(1.0)
    other = sanity.similarity(a, rng.random((20, 20)))
    assert abs(other["spearman"]) < 0.2 and abs(other["ssim"]) < 0.2
    assert np.isnan(sanity.similarity(a, np.zeros((20, 20)))["spearman"])
    with pytest.raises(ExplainerError):
        sanity.similarity(a, a[:5])


# ---------------------------------------------------------------------------------------------
# MIP-IN: no per-image mode, so the check fits it on every network (the original included)


@pytest.fixture(scope="module")
def shapes_resnet():
    from explainers import load_classifier
    from explainers.classifiers import DEFAULT_CLASSIFIER
    from explainers.data import load_dataset

    try:
        clf = load_classifier(DEFAULT_CLASSIFIER, device="cpu")
    except ExplainerError as e:
        pytest.skip(str(e))
    return clf, load_dataset("shapes", "test", limit=1)[0]


def test_mipin_is_refitted_on_every_network_and_its_map_falls_apart(shapes_resnet, one_thread):
    from explainers import explain
    from explainers.methods import mipin as M

    clf, item = shapes_resnet
    assert sanity.needs_network_fit("mipin") and not sanity.needs_network_fit("saliency")
    res = sanity.cascading_randomisation(clf, item.image, "mipin", target=item.label, steps=3, fit_samples=200)
    rho, ssim = res.spearman, res.ssim
    assert res.steps[:2] == ["original", "classifier"] and len(rho) == len(ssim) == 4 and res.target == item.label
    assert np.all(np.isfinite(rho)) and np.all(np.isfinite(ssim)) and rho[0] == 1.0 and ssim[0] == 1.0
    fit = res.as_dict()["fit"]
    assert fit["fitter"] == "mipin" and fit["samples"] == 200 and fit["seed"] == 0 and fit["options"] == {"holdout": 0}
    assert fit["images_used"] == {"main": 200, "reference": 200} and "next 200 images" in res.reference_how
    assert np.isfinite(res.reference_spearman) and res.reference_map is not None
    # Randomising only the logit layer leaves the features (and the forward-ReLU gates) as they were:
    # with the original network's fit reused, the map would only be rescaled by the new logit, a
    # Spearman of exactly +-1 at step 1. Each network's own fit gives another map.
    assert abs(rho[1]) < 0.5 and ssim[1] < 0.5
    assert np.all(np.abs(rho[1:]) < 0.6) and np.all(ssim[1:] < 0.6)
    # the original map is MIP-IN's: its 200-image fit draws nearly the committed (6,000-image) fit's map
    if M.fitted_paths(clf):
        committed = explain(clf, item.image, "mipin", target=item.label).maps["attribution"]
        assert sanity.similarity(res.maps[0], committed)["spearman"] > 0.8
        assert not np.allclose(res.maps[0], committed, rtol=1e-3, atol=1e-6)  # but made with its own fit, like the steps


def _files(root):
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_mipin_check_leaves_the_model_and_the_fits_alone(shapes_resnet, one_thread, tmp_path, monkeypatch):
    import tempfile

    from explainers.methods import mipin as M
    from explainers.fitted import ASSETS

    clf, item = shapes_resnet
    monkeypatch.setenv("EXPLAINERS_HOME", str(tmp_path / "home"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    before, committed, fits = _state(clf), _files(ASSETS / "explainers"), M.fitted_paths(clf)
    progress = []
    res = sanity.cascading_randomisation(clf, item.image, "mipin", steps=2, fit_samples=50,
                                         progress=lambda d, t, m="": progress.append((d, t, m)))
    assert len(res.steps) == 3 and np.all(np.isfinite(res.spearman))
    after = clf.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not clf.net.training and not any(p.requires_grad for p in clf.net.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in clf.net.modules())
    assert _files(ASSETS / "explainers") == committed and M.fitted_paths(clf) == fits
    assert not (tmp_path / "home" / "fitted").exists()  # nothing in the user's fits, under any id
    assert list((tmp_path / "tmp").iterdir()) == []  # the temporary fits are gone
    assert any("fitting mipin" in m for _, _, m in progress) and progress[-1][:2] == (4, 4)


def mipin_tiny(dataset=None) -> Classifier:
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return Classifier("tiny-sanity-mipin", net, ["a", "b", "c"], (8, 8), dataset=dataset)


def test_mipin_fits_on_given_pixels_and_says_what_it_needs(one_thread):
    clf = mipin_tiny()
    x = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ExplainerError, match="fit_data"):  # no built-in dataset to fit on
        sanity.cascading_randomisation(clf, x, "mipin", steps=1)
    pixels = torch.rand(40, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    res = sanity.cascading_randomisation(clf, x, "mipin", target=1, fit_data=pixels, fit_samples=30)
    assert res.steps == ["original", "5", "3", "0"] and np.all(np.isfinite(res.spearman)) and res.spearman[0] == 1.0
    assert np.all(res.spearman[1:] < 0.9)
    with pytest.raises(ExplainerError, match="leave it out"):  # a fit of one network cannot serve the cascade
        sanity.cascading_randomisation(clf, x, "mipin", fit_data=pixels, fit="some/mipin.safetensors")
    with pytest.raises(ExplainerError, match="fit_samples"):
        sanity.cascading_randomisation(clf, x, "mipin", fit_data=pixels, fit_samples=0)
