"""Standard baselines: checked against direct computations on a tiny network."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from explainers.classifiers.base import Classifier
from explainers.classifiers.embedded import SmallResNet
from explainers.core import explain
from explainers.errors import ExplainerError


@pytest.fixture
def clf(tiny_cnn):
    return tiny_cnn(12, 3, pool=2, nested=True)  # (features, head), like the embedded models


@pytest.fixture
def x():
    g = torch.Generator().manual_seed(1)
    return torch.rand(3, 12, 12, generator=g)


def _hooks(net):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in net.modules())


def test_occlusion_equals_direct_sliding_window(clf, x):
    r = explain(clf, x, "occlusion", target=1, window=4, stride=4, value=0.5)
    p0 = clf.probabilities(x[None])[0, 1]
    ref = torch.zeros(12, 12)
    for i in range(0, 9, 4):
        for j in range(0, 9, 4):
            xo = x.clone()
            xo[:, i : i + 4, j : j + 4] = 0.5
            ref[i : i + 4, j : j + 4] = p0 - clf.probabilities(xo[None])[0, 1]
    np.testing.assert_allclose(r.maps["occlusion"], ref.numpy(), atol=1e-5)


@pytest.mark.parametrize("window, stride", [(4, 4), (5, 2), (4, 3), (12, 12)])
def test_occlusion_equals_captums(clf, x, window, stride):
    """Our anytime loop visits Captum's windows (the last one clipped at the edge when the stride
    does not divide) and averages them as Captum does."""
    from captum.attr import Occlusion

    from explainers.methods.baselines import PixelModel

    r = explain(clf, x, "occlusion", target=2, window=window, stride=stride, value=0.3, batch_size=5)
    ref = Occlusion(PixelModel(clf, softmax=True)).attribute(
        x[None], sliding_window_shapes=(3, window, window), strides=(3, stride, stride), baselines=0.3, target=2)
    np.testing.assert_allclose(r.maps["occlusion"], ref[0].mean(0).numpy(), atol=1e-6)


def test_occlusion_publishes_final_values_coarse_to_fine():
    from explainers.methods.baselines import OcclusionConfig, run_occlusion

    g = torch.Generator().manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3))
    clf = Classifier("t", net.eval(), [str(i) for i in range(3)], (40, 40))
    x = torch.rand(1, 3, 40, 40, generator=g)
    parts = []

    def progress(done, total, message="", partial=None):
        if partial is not None:
            parts.append((done, total, partial["occlusion"].copy()))

    cfg = OcclusionConfig(window=8, stride=4, batch_size=7)
    final = run_occlusion(clf, x, 0, cfg, progress).maps["occlusion"].numpy()
    assert len(parts) >= 3 and parts[0][0] <= parts[0][1] / 3  # a first map after a third of the windows
    shown = [np.isfinite(p).mean() for _, _, p in parts]
    assert shown == sorted(shown) and 0 < shown[0] < 1
    for _, _, p in parts:
        ok = np.isfinite(p)
        np.testing.assert_array_equal(p[ok], final[ok].astype(np.float32))


def test_occlusion_stops_on_cancel(clf, x):
    from explainers.errors import Cancelled
    from explainers.methods.baselines import OcclusionConfig, run_occlusion

    seen = []

    def progress(done, total, message=""):
        seen.append(done)
        if done >= 3:
            raise Cancelled()

    with pytest.raises(Cancelled):
        run_occlusion(clf, x[None], 1, OcclusionConfig(window=4, stride=2, batch_size=3), progress)
    assert seen[-1] == 3 < 25


def test_integrated_gradients_completeness(clf, x):
    r = explain(clf, x, "integrated-gradients", target=2, steps=64, value=0.0)
    with torch.no_grad():
        gap = clf.logits01(x[None])[0, 2] - clf.logits01(torch.zeros(1, 3, 12, 12))[0, 2]
    assert abs(float(r.maps["integrated-gradients"].sum()) - float(gap)) < 1e-2 * max(1.0, abs(float(gap)))


def test_gradcam_is_nonnegative_upsampled_and_leaves_no_hooks():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = SmallResNet(4)
    c = Classifier("r", net, list("abcd"), (32, 32))
    before = _hooks(c.net)
    x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    r = explain(c, x, "gradcam", target=0)
    assert r.maps["gradcam"].shape == (32, 32) and r.maps["gradcam"].min() >= 0
    assert _hooks(c.net) == before == 0
    # the private copy gives the same logits as the shared model: it is a copy, not a change
    assert all(not p.requires_grad for p in c.net.parameters())


def test_gradcam_at_a_named_layer_equals_the_direct_formula():
    """Grad-CAM = ReLU(Σ_k α_k A_k), α_k = the spatial mean of ∂y_c/∂A_k, bilinearly upsampled —
    computed here with plain autograd at the layer the ``layer`` knob names."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = SmallResNet(4)
    c = Classifier("r", net, list("abcd"), (32, 32))
    x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    got = explain(c, x, "gradcam", target=2, layer="features.3").maps["gradcam"]
    default = explain(c, x, "gradcam", target=2).maps["gradcam"]
    store = {}
    layer = dict(net.named_modules())["features.3"]
    h = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        y = net(c.normalize(x[None].clone().requires_grad_(True)))[0, 2]
        (g,) = torch.autograd.grad(y, store["a"])
    finally:
        h.remove()
    cam = torch.relu((g.mean(dim=(2, 3), keepdim=True) * store["a"]).sum(1, keepdim=True))
    ref = torch.nn.functional.interpolate(cam, size=(32, 32), mode="bilinear", align_corners=False)[0, 0]
    np.testing.assert_allclose(got, ref.detach().numpy(), rtol=1e-4, atol=1e-6)
    assert not np.allclose(got, default)  # a different layer gives a different map
    with pytest.raises(ExplainerError, match="no module named 'features.99'"):
        explain(c, x, "gradcam", target=2, layer="features.99")


def test_rise_is_repeatable_and_batch_size_invariant(clf, x):
    a = explain(clf, x, "rise", masks=60, batch_size=60, seed=3).maps["rise"]
    b = explain(clf, x, "rise", masks=60, batch_size=7, seed=3).maps["rise"]
    c = explain(clf, x, "rise", masks=60, batch_size=60, seed=4).maps["rise"]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(a, c)


def test_rise_of_a_constant_classifier_is_its_probability(x):
    """If p(y|x) never changes, E[p·M]/E[M] = p everywhere (up to Monte-Carlo error of E[M])."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 2))
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].bias.copy_(torch.tensor([0.0, 1.0]))
    c = Classifier("const", net, ["a", "b"], (12, 12))
    m = explain(c, x, "rise", target=1, masks=2000, seed=0).maps["rise"]
    p = float(torch.softmax(torch.tensor([0.0, 1.0]), 0)[1])
    assert abs(float(m.mean()) - p) < 0.03


@pytest.mark.parametrize("method, params", [("occlusion", {"window": 0}), ("occlusion", {"window": 99}), ("rise", {"p": 1.5}), ("integrated-gradients", {"steps": 0})])
def test_bad_parameters(clf, x, method, params):
    with pytest.raises(ExplainerError):
        explain(clf, x, method, **params)
