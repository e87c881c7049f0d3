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
