"""Anytime PMI: coarse-to-fine order, exact partial maps, and the same final map as the direct order."""
import numpy as np
import pytest
import torch

import explainers
from explainers.methods import anytime, pmi
from explainers.methods.samplers import patch_boxes


@pytest.mark.parametrize("h,w,K,S", [(12, 12, 4, 2), (13, 10, 4, 3), (16, 16, 8, 4), (9, 9, 3, 1), (8, 8, 8, 8)])
def test_plan_visits_every_patch_once_and_partials_are_exact(h, w, K, S):
    boxes = patch_boxes(h, w, K, S)
    plan = anytime.coarse_to_fine(boxes, (h, w))
    assert sorted(plan.order.tolist()) == list(range(len(boxes)))
    assert plan.ends[-1] == len(boxes) and plan.ends == sorted(plan.ends)
    vals = np.random.default_rng(0).normal(size=len(boxes))
    final = pmi.distribute(vals, boxes, (h, w)).astype(np.float32)
    shown_before = np.zeros((h, w), bool)
    for end in plan.ends:
        part = plan.partial({"v": vals[plan.order[:end]]}, end, pmi.distribute)["v"]
        shown = ~np.isnan(part)
        # slow reference: a pixel is shown iff every patch covering it is among the first `end`
        done = set(plan.order[:end].tolist())
        for y in range(h):
            for x in range(w):
                cover = [i for i, (x0, y0, x1, y1) in enumerate(boxes) if x0 <= x < x1 and y0 <= y < y1]
                assert shown[y, x] == all(i in done for i in cover)
        np.testing.assert_array_equal(part[shown], final[shown])
        assert (shown | ~shown_before).all()  # what was shown stays shown
        shown_before = shown
    assert shown_before.all()


def test_first_level_is_coarse():
    boxes = patch_boxes(224, 224, 8, 4)
    plan = anytime.coarse_to_fine(boxes, (224, 224))
    first = plan.complete(plan.ends[0])
    assert plan.ends[0] < len(boxes) / 20 and first.any()
    rows = np.nonzero(first.any(1))[0]
    assert rows.max() - rows.min() > 150  # spread over the image, not a corner
    assert len(plan.ends) >= 8  # a picture every eighth of the work at most
    assert max(np.diff([0] + plan.ends)) <= len(boxes) / 4


def test_pmi_final_map_equals_direct_order_and_partials_are_published(tiny_cnn, monkeypatch):
    clf = tiny_cnn(side=32, classes=4, widths=(4, 4))
    img = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    kw = dict(K=4, N=3, stride=2, sampler="noise", seed=3, batch_size=6)
    seen = []

    def progress(done, total, message="", partial=None):
        if partial is not None:
            seen.append((done, partial))

    anytime_res = explainers.explain(clf, img, "pmi-ig", target=1, progress=progress, **kw)

    def direct(boxes, shape):  # the plain row-major order, no levels
        return anytime.Plan(np.arange(len(boxes)), [len(boxes)], boxes, shape)

    monkeypatch.setattr(pmi, "coarse_to_fine", direct)
    direct_res = explainers.explain(clf, img, "pmi-ig", target=1, **kw)
    for name in ("pmi", "ig"):
        np.testing.assert_array_equal(anytime_res.maps[name], direct_res.maps[name])
    np.testing.assert_array_equal(anytime_res.extras["patch_pmi"], direct_res.extras["patch_pmi"])
    assert len(seen) >= 2
    for _, part in seen:
        for name in ("pmi", "ig"):
            shown = ~np.isnan(part[name])
            assert shown.any() and not shown.all()
            np.testing.assert_array_equal(part[name][shown], anytime_res.maps[name][shown])


def test_plain_three_argument_callbacks_still_work(tiny_cnn):
    clf = tiny_cnn(side=12)
    calls = []
    explainers.explain(clf, torch.rand(3, 12, 12), "pmi-ig", K=4, N=1, stride=2, sampler="mean",
                       progress=lambda d, t, m: calls.append(d))
    assert calls and calls[-1] == 5 * 5


def test_dssr_publishes_its_mask_while_it_runs_and_the_result_does_not_change(tiny_cnn):
    clf = tiny_cnn(side=16, classes=3)
    img = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2))
    kw = dict(iterations=40, early_stop=0.0)
    parts = []
    res = explainers.explain(clf, img, "dssr", target=0, progress=lambda d, t, m="", partial=None:
                             parts.append((d, partial)) if partial is not None else None, **kw)
    plain = explainers.explain(clf, img, "dssr", target=0, **kw)
    np.testing.assert_array_equal(res.maps["mask"], plain.maps["mask"])
    assert [d for d, _ in parts] == [10, 20, 30]  # every tenth report, never the final mask
    for _, p in parts:
        assert p["mask"].shape == (16, 16) and np.isfinite(p["mask"]).all()


@pytest.mark.parametrize("method, kw, names", [
    ("varsal", dict(mode="per-image", steps=20, n_mc=2), ("mean", "std")),
    ("dcontrol", dict(generator="optimise", iterations=100, finetune_samples=2), ("mask",)),
])
def test_per_image_optimisations_publish_their_maps_and_the_result_does_not_change(tiny_cnn, method, kw, names):
    clf = tiny_cnn(side=16, classes=3)
    img = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(3))
    parts = []
    res = explainers.explain(clf, img, method, target=1, progress=lambda d, t, m="", partial=None:
                             parts.append((d, t, partial)) if partial is not None else None, **kw)
    plain = explainers.explain(clf, img, method, target=1, **kw)
    for name in res.maps:
        np.testing.assert_array_equal(res.maps[name], plain.maps[name])
    assert parts and all(d < t for d, t, _ in parts)  # while it runs, never the final map
    for _, _, p in parts:
        assert set(p) == set(names)
        assert all(p[n].shape == (16, 16) and np.isfinite(p[n]).all() for n in names)
