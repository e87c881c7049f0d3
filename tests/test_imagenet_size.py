"""ImageNet-size networks without downloads: random-weight torchvision resnet18 and vgg11 at 224×224.

Every method runs with fast settings (tiny N, few iterations: shapes and units are what is tested,
not the maps' meaning) and returns (224, 224) float32 maps in the units its spec declares. MIP-IN
needs fitted inverses: without them it refuses in one line naming the fit command.
"""
import numpy as np
import pytest
import torch

import explainers
from explainers.classifiers.torchvision_zoo import random_init

FAST = {
    "occlusion": dict(window=112, stride=112),
    "integrated-gradients": dict(steps=2, batch_size=2),
    "gradcam": {},
    "saliency": {},
    "rise": dict(masks=4, batch_size=4),
    "varsal": dict(mode="per-image", steps=1),
    "pmi-ig": dict(K=32, stride=32, N=1, sampler="mean"),
    "dcontrol": dict(generator="optimise", iterations=1, finetune_samples=1),
    "dssr": dict(iterations=1),
}


@pytest.fixture(scope="module", params=["resnet18", "vgg11"])
def net(request):
    torch.set_num_threads(1)
    return random_init(request.param, seed=0)


@pytest.fixture(scope="module")
def image():
    return torch.rand(3, 224, 224, generator=torch.Generator().manual_seed(0))


def test_every_method_is_covered():
    assert set(FAST) | {"mipin"} == set(explainers.METHODS)


@pytest.mark.parametrize("method", sorted(FAST))
def test_method_runs_at_224(net, image, method):
    r = explainers.explain(net, image, method, target=3, **FAST[method])
    spec = explainers.METHODS[method]
    assert set(r.maps) == set(spec.maps)
    for name, m in r.maps.items():
        assert m.shape == (224, 224) and m.dtype == np.float32 and np.isfinite(m).all()
        assert r.meta["units"][name] == spec.units[name]
    assert r.meta["target"] == 3 and r.meta["input_size"] == [224, 224]


def test_mipin_without_fit_names_the_fit_command(net, image):
    """Without a fit MIP-IN inverts what it can without data (the head's top Linear layer, data_free);
    asked to use fitted inverses only, it names the command that fits them."""
    with pytest.raises(explainers.ExplainerError, match="fit --explainer mipin"):
        explainers.explain(net, image, "mipin", target=3, data_free=False)
    if "vgg" in net.id:  # VGG's head is three Linear layers: only a fit inverts it
        with pytest.raises(explainers.ExplainerError, match="fit --explainer mipin"):
            explainers.explain(net, image, "mipin", target=3)
        return
    r = explainers.explain(net, image, "mipin", target=3)  # ResNet: fc alone, its minimum-norm inverse
    m = next(iter(r.maps.values()))
    assert m.shape == (224, 224) and np.isfinite(m).all() and np.ptp(m) > 0


def test_random_init_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = random_init("resnet18", seed=1), random_init("resnet18", seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a.weights_digest() == b.weights_digest() != random_init("resnet18", seed=2).weights_digest()
