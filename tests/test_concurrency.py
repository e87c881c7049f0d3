"""Several browser sessions share one cached classifier: explainers running at the same time in
different threads must give exactly what each gives alone, and leave the model as it was."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from explainers import explain, load_classifier
from explainers.data import load_dataset

# small settings: the point is interleaving, not quality
JOBS = [
    ("pmi-ig", dict(K=8, N=2, stride=8, sampler="blur", seed=0)),
    ("dssr", dict(iterations=15, seed=0)),
    ("varsal", {}),
    ("dcontrol", {}),
    ("mipin", {}),
    ("gradcam", {}),
    ("integrated-gradients", dict(steps=8)),
    ("occlusion", dict(window=16, stride=16)),
]


@pytest.fixture(scope="module")
def clf():
    return load_classifier("shapes-resnet", device="cpu")


def _state(net: torch.nn.Module):
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in net.modules())
    return hooks, [p.requires_grad for p in net.parameters()], [p.detach().clone() for p in net.parameters()], net.training


def test_concurrent_explanations_equal_serial_ones_and_leave_the_model_alone(clf):
    images = [it.image for it in load_dataset("shapes", "test", limit=2)]
    before = _state(clf.net)
    tasks = [(m, p, k) for m, p in JOBS for k in range(len(images))]
    serial = {(m, k): explain(clf, images[k], m, **p).maps for m, p, k in tasks}
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {(m, k): pool.submit(explain, clf, images[k], m, **p) for m, p, k in reversed(tasks)}
        together = {key: f.result().maps for key, f in futures.items()}
    for key, maps in serial.items():
        for name, arr in maps.items():
            np.testing.assert_allclose(together[key][name], arr, rtol=1e-4, atol=1e-5, err_msg=str((key, name)))
    after = _state(clf.net)
    assert after[0] == before[0] == 0, "hooks left on the shared model"
    assert after[1] == before[1] and after[3] == before[3] is False
    assert all(torch.equal(a, b) for a, b in zip(after[2], before[2]))
    # and two images really gave two different maps (the check above could not pass by accident)
    assert not np.array_equal(*(next(iter(serial[("gradcam", k)].values())) for k in (0, 1)))
