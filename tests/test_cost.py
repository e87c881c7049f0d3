"""Cost before work (``explainers.cost``): the passes each method's run makes, read from its config
and fits without running it, the measured rate of a classifier, and the seconds they predict."""
from __future__ import annotations

import time

import pytest
import torch

from explainers import cost, explain


@pytest.fixture(scope="module")
def clf(tiny_cnn):
    return tiny_cnn(side=16, classes=3)


def test_pmi_counts_patches_times_in_fills(clf):
    from explainers.methods.samplers import patch_boxes

    P = len(patch_boxes(16, 16, 4, 2))
    c = cost.estimate(clf, "pmi-ig", {"K": 4, "stride": 2, "N": 5, "sampler": "noise"})
    assert (c.forwards, c.passes) == (P * 5 + 2, 0) and not c.blocked  # + the image, + explain's own forward
    assert cost.estimate(clf, "pmi-ig", {"K": 4, "stride": 2, "N": 5, "sampler": "blur"}).forwards == P + 2  # deterministic: N = 1
    r = explain(clf, torch.rand(3, 16, 16), "pmi-ig", K=4, stride=2, N=5, sampler="noise")
    assert r.meta["forwards"] + 1 == c.forwards


def test_pmi_without_a_fitted_sampler_for_K_says_how_to_fit_one(clf):
    c = cost.estimate(clf, "pmi-ig", {"K": 5, "stride": 5})  # the photos samplers are fitted for K = 8 only
    assert "python -m explainers fit --explainer patchsampler" in c.blocked and "K=5" in c.blocked


def test_optimisations_count_their_steps(clf):
    c = cost.estimate(clf, "dssr", {"iterations": 40})
    assert c.passes == 80 and c.forwards == 4
    v = cost.estimate(clf, "varsal", {"mode": "per-image", "steps": 30, "n_mc": 6})
    assert v.passes == 180 and not v.amortised
    kw = {"generator": "optimise", "iterations": 20, "backgrounds": 3, "finetune_samples": 9}
    d = cost.estimate(clf, "dcontrol", {**kw, "delete": 0.0})
    assert d.passes == 60 and d.forwards == 10 + 1 and not d.amortised
    d2 = cost.estimate(clf, "dcontrol", kw)  # the default deletion term forwards the deleted composites too
    assert d2.passes == 120 and d2.forwards == 10 + 1


def test_baselines_count_windows_steps_masks(clf):
    assert cost.estimate(clf, "occlusion", {"window": 4, "stride": 4}).forwards == 16 + 1 + 1
    assert cost.estimate(clf, "integrated-gradients", {"steps": 10}).passes == 10
    assert cost.estimate(clf, "rise", {"masks": 50}).forwards == 51
    g = cost.estimate(clf, "gradcam", None)
    assert g.passes == 1 and g.forwards == 1


def test_amortised_methods_cost_one_pass_when_fitted_and_say_when_not(clf):
    from explainers.classifiers import load_classifier
    from explainers.classifiers.embedded import EMBEDDED

    if not EMBEDDED["shapes-resnet"].weights.exists():
        pytest.skip("shapes-resnet not trained")
    real = load_classifier("shapes-resnet", device="cpu")
    for method in ("varsal", "dcontrol", "mipin"):
        c = cost.estimate(real, method)
        assert c.amortised and c.forwards + c.passes <= 80 and not c.blocked, (method, c)
    assert not cost.estimate(real, "varsal", {"alpha": 0.2}).amortised  # other settings: per-image
    assert "fit" in cost.estimate(clf, "mipin").blocked  # no fit for the in-memory network
    assert not cost.estimate(clf, "varsal").amortised and not cost.estimate(clf, "dcontrol").amortised


def test_rates_are_measured_once_and_leave_the_model_alone(clf):
    rates = cost.forwards_per_second(clf)
    assert rates.forward > 0 and rates.backward > 0
    assert cost.forwards_per_second(clf) is rates
    assert all(p.grad is None and not p.requires_grad for p in clf.net.parameters())
    assert cost.estimate(clf, "rise", {"masks": 100}).seconds(rates) == pytest.approx(101 / rates.forward)


def test_pmi_estimate_is_within_a_factor_of_two_of_the_run():
    """The PMI estimate against the measured run on this machine (shapes-resnet at K = 8, S = 4:
    225 patches × 8 in-fills, about two seconds), after one warm-up run. The noise sampler draws
    as many in-fills as the PatchSampler, without depending on a fitted file."""
    from explainers.classifiers import load_classifier
    from explainers.classifiers.embedded import EMBEDDED
    from explainers.data.samples import get_sample

    if not EMBEDDED["shapes-resnet"].weights.exists():
        pytest.skip("shapes-resnet not trained")
    real = load_classifier("shapes-resnet", device="cpu")
    image = get_sample("shapes/test/0").image
    settings = {"sampler": "noise", "K": 8, "N": 8, "stride": 4}
    explain(real, image, "pmi-ig", **{**settings, "stride": 8, "N": 2})  # warm-up: first-call allocations
    # the rate is measured just before and just after the run: on a shared machine the load can change
    # between a measurement and the run, and the run must match the machine as it was around it
    expected = [cost.estimate(real, "pmi-ig", settings).seconds(cost.forwards_per_second(real, refresh=True))]
    start = time.perf_counter()
    explain(real, image, "pmi-ig", **settings)
    took = time.perf_counter() - start
    expected.append(cost.estimate(real, "pmi-ig", settings).seconds(cost.forwards_per_second(real, refresh=True)))
    assert any(e / 2 <= took <= e * 2 for e in expected), (expected, took)
