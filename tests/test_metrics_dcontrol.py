"""Metrics of paper 003: M_F (Eq. 8), M_I (Eq. 9) and the pointing game (Section 4.2.2),
on hand-made maps with known answers and against slow, obviously-correct references."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from explainers.classifiers.base import Classifier
from explainers.errors import ExplainerError
from explainers.metrics import box_mask, faithfulness_curve, m_f, m_i, pointing_game, reveal_masks

H = W = 32
N = H * W
OBJ = np.zeros((H, W), bool)
OBJ[: H // 4] = True  # the object: the top quarter of the image (N/4 pixels)


def object_probability(x: torch.Tensor) -> torch.Tensor:
    """A 'classifier' whose class-0 probability is the mean of channel 0 over the object."""
    p0 = x[:, 0][:, torch.from_numpy(OBJ)].mean(dim=1)
    return torch.stack([p0, 1 - p0], dim=1)


IMAGE = torch.ones(1, 3, H, W)
BLACK = torch.zeros(1, 3, H, W)
PERFECT = OBJ.astype(float)  # object first
REVERSED = 1.0 - PERFECT  # object last
CONSTANT = np.full((H, W), 0.3)


def test_reveal_masks_keep_exact_counts_and_split_ties():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, size=(H, W)).astype(float)  # many ties
    fr = np.linspace(0, 1, 33)
    masks = reveal_masks(s, fr)
    np.testing.assert_allclose(masks.reshape(33, -1).sum(1), np.round(fr * N), atol=1e-9)
    # monotone in the fraction, and a higher value is never kept less than a lower one
    assert np.all(np.diff(masks, axis=0) >= -1e-12)
    for k in range(33):
        for a in range(5):
            for b in range(a + 1, 5):
                if (s == a).any() and (s == b).any():
                    assert masks[k][s == b].min() >= masks[k][s == a].max() - 1e-12


@pytest.mark.parametrize(
    "saliency, expected",
    [(PERFECT, (36 / 8 + 24) / 32 * 100), (REVERSED, (36 / 8) / 32 * 100), (CONSTANT, 528 / 1024 * 100)],
    ids=["perfect", "reversed", "constant"],
)
def test_m_f_known_answers(saliency, expected):
    # q_i = min(1, 4iΔ) for the perfect map, max(0, 4iΔ − 3) reversed, iΔ for a constant map
    assert m_f(object_probability, IMAGE, saliency, 0, reference=BLACK) == pytest.approx(expected, abs=1e-9)


def test_m_f_subtracts_the_floor_or_follows_the_printed_formula():
    grey = torch.full((1, 3, H, W), 0.5)  # q_F = 0.5, q_O = 1
    assert m_f(object_probability, IMAGE, PERFECT, 0, reference=grey) == pytest.approx((36 / 8 + 24) / 32 * 100)
    fr, q = faithfulness_curve(object_probability, IMAGE, PERFECT, 0, reference=grey)
    literal = np.sum(q[1:] / (q[-1] - q[0])) / 32 * 100
    assert m_f(object_probability, IMAGE, PERFECT, 0, reference=grey, subtract_floor=False) == pytest.approx(literal)
    assert literal > 100  # why the floor is subtracted by default
    assert q[0] == pytest.approx(0.5) and q[-1] == pytest.approx(1.0) and len(fr) == 33


def test_m_f_delta_and_batch_size_do_not_change_the_curve_points():
    a = m_f(object_probability, IMAGE, PERFECT, 0, reference=BLACK, batch_size=1)
    b = m_f(object_probability, IMAGE, PERFECT, 0, reference=BLACK, batch_size=64)
    assert a == pytest.approx(b)
    # Δ = 1/4: q = 1, 1, 1, 1 -> 100%
    assert m_f(object_probability, IMAGE, PERFECT, 0, reference=BLACK, delta=0.25) == pytest.approx(100.0)


def test_m_f_with_a_classifier_and_the_default_blurred_reference():
    torch.manual_seed(0)  # the test's own network
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    clf = Classifier("tiny", net, ["a", "b", "c"], (16, 16))
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    s = np.random.default_rng(2).random((16, 16))
    fr, q = faithfulness_curve(clf, x, s, 1)
    from explainers.methods.references import blur

    assert q[-1] == pytest.approx(float(clf.probabilities(x)[0, 1]), abs=1e-6)
    assert q[0] == pytest.approx(float(clf.probabilities(blur(x, 1.0))[0, 1]), abs=1e-6)
    assert np.isfinite(m_f(clf, x, s, 1))


def m_i_slow(s: np.ndarray, rel: np.ndarray) -> float:
    """Eq. 9 pixel by pixel (valid for maps without ties)."""
    order = sorted(range(s.size), key=lambda k: -s.ravel()[k])
    total, hits, prev_r = 0.0, 0, 0.0
    for i, k in enumerate(order, start=1):
        hits += int(rel.ravel()[k])
        p, r = hits / i, hits / rel.sum()
        total += p * (r - prev_r)
        prev_r = r
    return total * 100


def test_m_i_known_answers():
    B = int(OBJ.sum())
    assert m_i(PERFECT, (0, 0, W, H // 4)) == pytest.approx(100.0)
    reversed_expected = np.mean([j / (N - B + j) for j in range(1, B + 1)]) * 100
    rng = np.random.default_rng(0)
    # reversed, with the values inside each part strictly ordered (no ties)
    s_rev = REVERSED + 1e-3 * rng.random((H, W))
    assert m_i(s_rev, (0, 0, W, H // 4)) == pytest.approx(reversed_expected, rel=1e-9)
    assert m_i(CONSTANT, (0, 0, W, H // 4)) == pytest.approx(B / N * 100)
    assert m_i(PERFECT, OBJ) == pytest.approx(100.0)  # a bool mask works as well as a box


def test_m_i_matches_the_pixel_by_pixel_sum():
    rng = np.random.default_rng(3)
    s = rng.random((12, 10))
    rel = box_mask((12, 10), [(1, 2, 5, 7), (6, 6, 10, 12)])
    assert m_i(s, [(1, 2, 5, 7), (6, 6, 10, 12)]) == pytest.approx(m_i_slow(s, rel), rel=1e-12)


def test_m_i_ties_agree_with_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(4)
    s = rng.integers(0, 4, size=(9, 9)).astype(float)
    rel = box_mask((9, 9), (2, 2, 6, 7))
    assert m_i(s, rel) == pytest.approx(100 * sk.average_precision_score(rel.ravel(), s.ravel()))


def test_box_mask_has_exclusive_ends():
    m = box_mask((5, 6), (1, 2, 3, 5))
    assert m.sum() == 2 * 3 and m[2, 1] and m[4, 2] and not m[2, 3] and not m[1, 1]


def test_pointing_game():
    s = np.zeros((8, 8))
    s[2, 3] = 1
    assert pointing_game(s, (3, 2, 4, 3))
    assert not pointing_game(s, (0, 0, 2, 2))
    assert not pointing_game(np.ones((8, 8)), (0, 0, 4, 4))  # all maximal: not all inside


def test_bad_inputs_raise_explainer_error():
    with pytest.raises(ExplainerError):
        m_i(PERFECT, (100, 100, 120, 120))  # a box outside the image
    with pytest.raises(ExplainerError):
        m_i(np.zeros((2, 3, 4)), (0, 0, 1, 1))
    with pytest.raises(ExplainerError):
        m_f(object_probability, IMAGE, PERFECT, 0, delta=0)
    with pytest.raises(ExplainerError):
        m_f(object_probability, IMAGE, np.zeros((4, 4)), 0)
    with pytest.raises(ExplainerError):
        m_i(np.full((4, 4), np.nan), (0, 0, 2, 2))
