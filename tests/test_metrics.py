"""Deletion / insertion (RISE), bounding-box accuracy (MIP-IN 6.3), the KL curve (VarSal 4.4) and
the re-exported APC: hand-made maps with known answers (perfect, reversed, constant), and against
Quantus where it implements the same thing (pixel flipping, relevance rank accuracy, pointing game)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from explainers import metrics as M
from explainers.errors import ExplainerError

H = W = 32
N = H * W
OBJ = np.zeros((H, W), bool)
OBJ[: H // 4] = True  # the object: the top quarter (N/4 pixels)


def object_probability(x: torch.Tensor) -> torch.Tensor:
    """Class-0 probability = the mean of channel 0 over the object."""
    p0 = x[:, 0][:, torch.from_numpy(OBJ)].mean(dim=1)
    return torch.stack([p0, 1 - p0], dim=1)


def soft_probability(x: torch.Tensor) -> torch.Tensor:
    """As above but never 0 or 1: p0 = 0.1 + 0.8 · (object mean)."""
    p0 = 0.1 + 0.8 * x[:, 0][:, torch.from_numpy(OBJ)].mean(dim=1)
    return torch.stack([p0, 1 - p0], dim=1)


IMAGE = torch.ones(3, H, W)
PERFECT = OBJ.astype(float)
REVERSED = 1.0 - PERFECT
CONSTANT = np.full((H, W), 0.3)


TINY = dict(classes=4, widths=(6, 6), pool=2, scale=0.3)  # the tiny classifier of these tests (tiny_cnn's options)


@pytest.fixture
def clf(tiny_cnn):
    return tiny_cnn(16, **TINY)


# -------------------------------------------------------------------------------- deletion / insertion


@pytest.mark.parametrize("saliency, expected", [(PERFECT, 1 / 8), (REVERSED, 7 / 8), (CONSTANT, 1 / 2)], ids=["perfect", "reversed", "constant"])
def test_deletion_auc_known_answers(saliency, expected):
    # p(f) = max(0, 1 − 4f) for the perfect map, 1 then falling after f = 3/4 reversed, 1 − f constant
    assert M.deletion_auc(object_probability, IMAGE, saliency, 0) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("saliency, expected", [(PERFECT, 7 / 8), (REVERSED, 1 / 8), (CONSTANT, 1 / 2)], ids=["perfect", "reversed", "constant"])
def test_insertion_auc_known_answers(saliency, expected):
    assert M.insertion_auc(object_probability, IMAGE, saliency, 0, baseline="black") == pytest.approx(expected, abs=1e-9)


def test_deletion_curve_points_steps_and_baselines():
    fr, p = M.deletion_curve(object_probability, IMAGE.unsqueeze(0), PERFECT, 0, steps=4)
    np.testing.assert_allclose(fr, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(p, [1, 0, 0, 0, 0], atol=1e-9)
    # a grey baseline leaves half the probability once the object is gone
    _, p = M.deletion_curve(object_probability, IMAGE, PERFECT, 0, steps=4, baseline="grey")
    np.testing.assert_allclose(p, [1, 0.5, 0.5, 0.5, 0.5], atol=1e-9)
    _, p = M.deletion_curve(object_probability, IMAGE, PERFECT, 0, steps=4, baseline=0.25)
    np.testing.assert_allclose(p[1:], 0.25, atol=1e-9)
    # the other class's curve is the complement
    _, p1 = M.deletion_curve(object_probability, IMAGE, PERFECT, 1, steps=4)
    np.testing.assert_allclose(p1, [0, 1, 1, 1, 1], atol=1e-9)


def test_insertion_with_blur_is_m_f_curve(clf):
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    s = np.random.default_rng(2).random((16, 16))
    fr, p = M.insertion_curve(clf, x, s, 2, steps=32)
    fr2, q = M.faithfulness_curve(clf, x, s, 2)
    np.testing.assert_allclose(fr, fr2)
    np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-6)
    assert p[-1] == pytest.approx(float(clf.probabilities(x[None])[0, 2]), rel=1e-5)


def test_batch_size_does_not_change_the_curves(clf):
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(3))
    s = np.random.default_rng(4).random((16, 16))
    a = M.deletion_curve(clf, x, s, 1, batch_size=1)[1]
    b = M.deletion_curve(clf, x, s, 1, batch_size=64)[1]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_curves_reject_bad_input():
    with pytest.raises(ExplainerError):
        M.deletion_auc(object_probability, IMAGE, np.ones((5, 5)), 0)
    with pytest.raises(ExplainerError):
        M.deletion_auc(object_probability, IMAGE, PERFECT, 0, steps=0)
    with pytest.raises(ExplainerError):
        M.deletion_auc(object_probability, IMAGE, PERFECT, 0, baseline="purple")
    with pytest.raises(ExplainerError):
        M.deletion_auc(object_probability, IMAGE, np.full((H, W), np.nan), 0)


def test_deletion_good_map_beats_random_on_a_real_classifier(clf):
    """The model's own input-gradient-times-input ranks pixels better than chance."""
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    t = int(clf.probabilities(x)[0].argmax())
    occl = np.zeros((16, 16))
    p0 = float(clf.probabilities(x)[0, t])
    xs = x.repeat(256, 1, 1, 1)
    for k in range(256):  # single-pixel occlusion, the map deletion rewards by construction
        xs[k, :, k // 16, k % 16] = 0
    occl = (p0 - clf.probabilities(xs)[:, t].numpy()).reshape(16, 16)
    good = M.deletion_auc(clf, x, occl, t)
    rand = np.mean([M.deletion_auc(clf, x, M.random_map((16, 16), seed=i), t) for i in range(5)])
    assert good < rand


# -------------------------------------------------------------------------------- bounding-box accuracy


def test_bbox_accuracy_known_answers():
    assert M.bbox_accuracy(PERFECT, OBJ) == 1.0
    assert M.bbox_accuracy(REVERSED, OBJ) == 0.0
    assert M.bbox_accuracy(CONSTANT, OBJ) == pytest.approx(0.25)
    box = (0, 0, W, H // 4)  # the same region given as a box
    assert M.bbox_accuracy(PERFECT, box) == 1.0
    half = np.zeros((H, W))
    half[H // 8 : H // 8 + H // 4] = 1.0  # shifted down by half the object's height
    assert M.bbox_accuracy(half, box) == pytest.approx(0.5)
    with pytest.raises(ExplainerError):
        M.bbox_accuracy(PERFECT, (0, 0, 0, 0))


# -------------------------------------------------------------------------------- KL curve


def _kl(p0, q0):
    return p0 * np.log(p0 / q0) + (1 - p0) * np.log((1 - p0) / (1 - q0))


def test_kl_curve_known_answers():
    fr, kl = M.kl_curve(soft_probability, IMAGE, PERFECT)
    np.testing.assert_allclose(fr, np.arange(1, 10) / 10)
    # the background goes first (k <= 3/4): nothing changes; then the object's edge
    zeroed = [N - round((1 - k) * N) for k in fr]  # whole pixels: the kept count is rounded
    expected = [0.0 if z <= 3 * N // 4 else _kl(0.9, 0.9 - 0.8 * (z - 3 * N // 4) / (N // 4)) for z in zeroed]
    np.testing.assert_allclose(kl, expected, rtol=1e-5, atol=1e-7)  # float32 probabilities
    _, kl_c = M.kl_curve(soft_probability, IMAGE, CONSTANT)
    np.testing.assert_allclose(kl_c, [_kl(0.9, 0.9 - 0.8 * z / N) for z in zeroed], rtol=1e-5, atol=1e-7)
    _, kl_r = M.kl_curve(soft_probability, IMAGE, REVERSED)
    assert np.all(kl_r >= kl_c - 1e-12) and np.all(kl_c >= kl - 1e-12)  # reversed worst, perfect best
    assert M.kl_auc(soft_probability, IMAGE, PERFECT) == pytest.approx(np.mean(expected))


def test_kl_curve_matches_scipy_entropy_on_a_classifier(clf):
    from scipy.stats import entropy

    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(6))
    s = np.random.default_rng(7).random((16, 16))
    fr, kl = M.kl_curve(clf, x, s, fractions=[0.5])
    keep = torch.from_numpy(s >= np.median(s)).float()  # no ties: the top half kept
    p = clf.probabilities(x[None])[0].double().numpy()
    q = clf.probabilities((x * keep)[None])[0].double().numpy()
    assert kl[0] > 1e-2 and kl[0] == pytest.approx(entropy(p, q), rel=1e-4)


# -------------------------------------------------------------------------------- APC re-export


def test_apc_is_mipin_s():
    from explainers.methods import mipin

    assert M.apc is mipin.apc and M.positive_apc is mipin.positive_apc and M.completeness is mipin.completeness
    assert M.apc(np.array([2.0, 4.0]), np.array([1.0, 4.0])) == pytest.approx(25.0)  # (50% + 0%) / 2
    assert M.positive_apc(np.array([2.0, 4.0]), np.array([3.0, 4.0])) == pytest.approx(0.0)


# -------------------------------------------------------------------------------- against Quantus

quantus = pytest.importorskip("quantus", reason="quantus is not installed (pip install quantus)")


class _PixelNet(nn.Module):
    def __init__(self, clf):
        super().__init__()
        self.clf = clf
        self.net = clf.net  # so quantus finds parameters

    def forward(self, x):
        return self.clf.logits01(x)


def test_deletion_curve_equals_quantus_pixel_flipping(tiny_cnn):
    clf = tiny_cnn(12, **TINY)
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(8))
    s = np.random.default_rng(9).random((12, 12))  # no ties: quantus breaks them by position
    steps = 36  # 4 pixels (12 features: a pixel's 3 channels are adjacent in quantus's order) a step
    pf = quantus.PixelFlipping(features_in_step=3 * 144 // steps, normalise=False, abs=False,
                               perturb_baseline=0.0, disable_warnings=True)
    a = np.broadcast_to(s, (1, 3, 12, 12)).astype(np.float32)
    theirs = np.asarray(pf(model=_PixelNet(clf).eval(), x_batch=x.numpy(), y_batch=np.array([1]), a_batch=a,
                           channel_first=True, softmax=True, device="cpu")[0])
    _, ours = M.deletion_curve(clf, x, s, 1, steps=steps, baseline="black")
    np.testing.assert_allclose(ours[1:], theirs, rtol=1e-4, atol=1e-6)


def test_bbox_accuracy_equals_quantus_relevance_rank_accuracy():
    rng = np.random.default_rng(10)
    maps = rng.random((8, 1, H, W))
    masks = np.zeros((8, 1, H, W), bool)
    for i in range(8):
        y0, x0 = rng.integers(0, 20, 2)
        masks[i, 0, y0 : y0 + rng.integers(3, 12), x0 : x0 + rng.integers(3, 12)] = True
        maps[i, 0][masks[i, 0]] += rng.random() * 0.8  # partly informative
    rra = quantus.RelevanceRankAccuracy(disable_warnings=True, normalise=False, abs=False)
    theirs = rra(model=None, x_batch=np.zeros((8, 1, H, W), np.float32), y_batch=np.zeros(8, int), a_batch=maps, s_batch=masks.astype(float))
    ours = [M.bbox_accuracy(maps[i, 0], masks[i, 0]) for i in range(8)]
    np.testing.assert_allclose(ours, theirs, atol=1e-12)


def test_pointing_game_equals_quantus_on_unique_maxima():
    rng = np.random.default_rng(11)
    maps = rng.random((10, 1, H, W))
    masks = np.zeros((10, 1, H, W), bool)
    for i in range(10):
        masks[i, 0, 4:20, 6:22] = True
        if i % 2:
            maps[i, 0, 10, 10] = 2.0  # hit
        else:
            maps[i, 0, 28, 30] = 2.0  # miss
    pg = quantus.PointingGame(disable_warnings=True, normalise=False, abs=False)
    theirs = pg(model=None, x_batch=np.zeros((10, 1, H, W), np.float32), y_batch=np.zeros(10, int), a_batch=maps, s_batch=masks.astype(float))
    ours = [M.pointing_game(maps[i, 0], masks[i, 0]) for i in range(10)]
    assert ours == [bool(t) for t in theirs] == [bool(i % 2) for i in range(10)]
