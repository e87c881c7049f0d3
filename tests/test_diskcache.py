"""The disk cache: a second call (another process, after a restart) reads the stored result."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from explainers.classifiers.base import Classifier
from explainers.diskcache import cached_explain


def _clf():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    return Classifier("tiny-cache", net, ["a", "b", "c"], (12, 12))


def test_second_call_hits_and_returns_the_same_maps(tmp_path):
    clf = _clf()
    x = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(0))
    first = cached_explain(clf, x, "rise", target=1, directory=tmp_path, masks=50, seed=1)
    second = cached_explain(clf, x, "rise", target=1, directory=tmp_path, masks=50, seed=1)
    assert first.meta["cached"] is False and second.meta["cached"] is True
    np.testing.assert_array_equal(first.maps["rise"], second.maps["rise"])
    assert second.meta["params"] == first.meta["params"]
    # any change of config, target or image is a different entry
    assert cached_explain(clf, x, "rise", target=1, directory=tmp_path, masks=50, seed=2).meta["cached"] is False
    assert cached_explain(clf, x, "rise", target=0, directory=tmp_path, masks=50, seed=1).meta["cached"] is False
    assert cached_explain(clf, x.flip(2), "rise", target=1, directory=tmp_path, masks=50, seed=1).meta["cached"] is False


def test_corrupt_entry_is_recomputed(tmp_path):
    clf = _clf()
    x = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(0))
    cached_explain(clf, x, "rise", directory=tmp_path, masks=20)
    (entry,) = (tmp_path / "rise").glob("*.npz")
    entry.write_bytes(b"garbage")
    again = cached_explain(clf, x, "rise", directory=tmp_path, masks=20)
    assert again.meta["cached"] is False and again.maps["rise"].shape == (12, 12)
