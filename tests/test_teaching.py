"""The teaching tour's engine helpers: removing evidence (PMI paper, Fig. 10) and corrupting images."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from explainers.errors import ExplainerError
from explainers.teaching import corrupt, evidence_order, remove_evidence


class LinearClassifier:
    """Two classes; the logit of class 1 is 5 × (mean of the left half − mean of the right half)."""

    device = torch.device("cpu")

    def probabilities(self, x01: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        w = x01.shape[-1] // 2
        z = 5.0 * (x01[..., :w].mean(dim=(1, 2, 3)) - x01[..., w:].mean(dim=(1, 2, 3)))
        return torch.softmax(torch.stack([torch.zeros_like(z), z], 1), 1)


def _image(h: int = 8, w: int = 8) -> torch.Tensor:
    x = torch.full((3, h, w), 0.5)
    x[:, :, : w // 2] = 0.8  # supports class 1
    x[:, :, w // 2 :] = 0.6  # opposes class 1
    return x


def test_evidence_order_ranks_each_sign_strongest_first_and_skips_zero():
    s = np.array([[0.0, -1.0, 2.0], [-3.0, 0.5, 0.0]])
    assert evidence_order(s, "opposing").tolist() == [3, 1]
    assert evidence_order(s, "supporting").tolist() == [2, 4]
    with pytest.raises(ExplainerError):
        evidence_order(s, "both")
    with pytest.raises(ExplainerError):
        evidence_order(np.array([[np.nan]]), "opposing")


def test_remove_evidence_replaces_exactly_the_ranked_pixels_by_the_reference():
    x = _image()
    s = np.zeros((8, 8))
    s[:, 4:] = -np.arange(32).reshape(8, 4)  # right half opposes, most negative at the bottom right
    s[0, 4] = 0.0  # not evidence of either sign
    out = remove_evidence(LinearClassifier(), x, s, 1, fractions=(0.0, 0.5, 1.0), reference_kind="constant", value=0.0)
    assert int(out["count"]) == 31 and out["pixels"].tolist() == [0, 16, 31]
    imgs = out["images"]
    assert np.allclose(imgs[0], x.numpy())  # nothing removed
    removed = (imgs[2] == 0.0).all(axis=0)
    assert removed.sum() == 31 and not removed[:, :4].any() and not removed[0, 4]
    half = (imgs[1] == 0.0).all(axis=0).ravel()
    assert set(np.flatnonzero(half)) == set(evidence_order(s, "opposing")[:16].tolist())


def test_removing_opposing_evidence_raises_the_probability_and_supporting_lowers_it_on_a_linear_model():
    x = _image()
    s = np.zeros((8, 8))
    s[:, :4], s[:, 4:] = 1.0, -1.0  # the true evidence of the linear model
    clf = LinearClassifier()
    opp = remove_evidence(clf, x, s, 1, (0.0, 0.5, 1.0), "opposing", "constant", value=0.0)["probability"]
    sup = remove_evidence(clf, x, s, 1, (0.0, 0.5, 1.0), "supporting", "constant", value=0.0)["probability"]
    assert opp[0] == pytest.approx(sup[0])
    assert np.all(np.diff(opp) > 0) and np.all(np.diff(sup) < 0)
    # a map with the signs the wrong way round fails the same check: the test can tell
    wrong = remove_evidence(clf, x, -s, 1, (0.0, 1.0), "opposing", "constant", value=0.0)["probability"]
    assert wrong[1] < wrong[0]


def test_remove_evidence_rejects_bad_input():
    x, s = _image(), np.zeros((8, 8))
    clf = LinearClassifier()
    with pytest.raises(ExplainerError):
        remove_evidence(clf, x, np.zeros((4, 4)), 1)
    with pytest.raises(ExplainerError):
        remove_evidence(clf, x, s, 1, fractions=(0.5, 1.5))
    with pytest.raises(ExplainerError):
        remove_evidence(clf, x, s, 1, reference_kind="lava")
    out = remove_evidence(clf, x, s, 1)  # no evidence at all: every image is the original
    assert int(out["count"]) == 0 and np.allclose(out["images"], x.numpy()[None])


def test_removing_the_pmi_maps_opposing_evidence_raises_confidence_on_a_builtin_image():
    """The property of the PMI paper's Fig. 10, on the tour's first example (the second shape opposes
    the top class). Removing the supporting evidence instead is the control: it must fall."""
    from explainers import explain, load_classifier
    from explainers.classifiers.embedded import EMBEDDED
    from explainers.data.samples import get_sample
    from explainers.methods.pmi import pmi_map

    if not EMBEDDED["shapes-resnet"].weights.exists():
        pytest.skip("shapes-resnet weights not trained yet")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        clf = load_classifier("shapes-resnet", device="cpu")
        image = get_sample("shapes-two/test/6").image
        res = explain(clf, image, "pmi-ig", K=8, N=8, stride=8, seed=0)
        t = int(res.meta["target"])
        pm = pmi_map(res.extras, t)
        x = clf.pixels(image)
        fr = (0.0, 0.1, 0.3)
        opp = remove_evidence(clf, x, pm, t, fr, "opposing")["probability"]
        sup = remove_evidence(clf, x, pm, t, fr, "supporting")["probability"]
    finally:
        torch.set_num_threads(n)
    assert (pm < 0).any() and (pm > 0).any()  # a map with both signs
    assert opp[1] > opp[0] + 0.1 and opp[2] > opp[0] + 0.1, opp
    assert sup[2] < sup[0] - 0.3, sup


def _test_image() -> Image.Image:
    rng = np.random.default_rng(0)
    arr = (rng.random((16, 20, 3)) * 200).astype(np.uint8)
    arr[:, 10] = 255  # a vertical line: motion blur (horizontal) must spread it
    return Image.fromarray(arr, "RGB")


def test_corrupt_kinds_do_what_they_say_and_keep_the_size():
    im = _test_image()
    a = np.asarray(im, dtype=np.float64)
    bright = np.asarray(corrupt(im, "brightness", 5), dtype=np.float64)
    assert bright.shape == a.shape and bright.mean() > a.mean() + 60
    blur = np.asarray(corrupt(im, "motion-blur", 3), dtype=np.float64)
    assert np.abs(np.diff(blur, axis=1)).mean() < 0.5 * np.abs(np.diff(a, axis=1)).mean()  # smoother along rows
    assert blur[:, 10].mean() < 250 and blur[:, 12].mean() > a[:, 12].mean() - 1  # the line spreads sideways
    noisy1 = np.asarray(corrupt(im, "noise", 5, seed=1), dtype=np.float64)
    noisy1b = np.asarray(corrupt(im, "noise", 5, seed=1), dtype=np.float64)
    noisy2 = np.asarray(corrupt(im, "noise", 5, seed=2), dtype=np.float64)
    assert np.array_equal(noisy1, noisy1b) and not np.array_equal(noisy1, noisy2)
    assert 30 < np.abs(noisy1 - a).mean() < 60  # s.d. 0.2 of the range ≈ 51 grey levels → mean |e| ≈ 40
    mild = np.asarray(corrupt(im, "noise", 1, seed=1), dtype=np.float64)
    assert np.abs(mild - a).mean() < np.abs(noisy1 - a).mean() / 3


def test_corrupt_rejects_bad_kind_and_severity():
    im = _test_image()
    for bad in (0, 6, 2.5, True):
        with pytest.raises(ExplainerError):
            corrupt(im, "noise", bad)
    with pytest.raises(ExplainerError):
        corrupt(im, "fog", 3)
