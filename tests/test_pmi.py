"""PMI and IG maps (Eq. 3-5, Algorithm 1) against a slow, obviously-correct reference on a tiny
model; the paper's properties; batch-size invariance, seeds, bad parameters; and, on the trained
embedded models with the committed PatchSamplers, the properties the paper claims."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from explainers.classifiers.base import Classifier
from explainers.core import explain, make_config
from explainers.errors import Cancelled, ExplainerError
from explainers.methods import samplers as S
from explainers.methods.pmi import distribute, ig_map, pmi_map


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1), nn.Tanh(),
        nn.Flatten(), nn.Linear(8 * 6 * 6, 4),
    )
    with torch.no_grad():
        net[-1].weight.mul_(8)  # confident enough that patches matter
    return Classifier("tiny", net, ["a", "b", "c", "d"], (12, 12))


@pytest.fixture(scope="module")
def image():
    return torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(1))


def _positions(size, K, stride):
    pos = list(range(0, size - K + 1, stride))
    return pos if pos[-1] == size - K else pos + [size - K]


def slow_reference(clf, x, K, stride, fills):
    """Loops over patches, in-fills and pixels; float64; Eq. 3 (mean of p), Eq. 4, Eq. 5 (KL)."""
    H, W = clf.input_size
    with torch.no_grad():
        p0 = torch.softmax(clf.logits01(x[None]).double(), 1)[0].numpy()
        C = p0.shape[0]
        pmi_sum, ig_sum, cnt = np.zeros((C, H, W)), np.zeros((H, W)), np.zeros((H, W))
        k = 0
        for y in _positions(H, K, stride):
            for x0 in _positions(W, K, stride):
                q = np.zeros(C)
                for f in fills[k]:
                    img = x.clone()
                    img[:, y : y + K, x0 : x0 + K] = f
                    q += torch.softmax(clf.logits01(img[None]).double(), 1)[0].numpy()
                q /= len(fills[k])  # Eq. 3: the mean of the probabilities
                pmi = np.log2(p0) - np.log2(q)  # Eq. 4
                ig = float(np.sum(p0 * np.log2(p0 / q)))  # Eq. 5: KL(p(Y|x) || p(Y|x_\r))
                for i in range(y, y + K):
                    for j in range(x0, x0 + K):
                        pmi_sum[:, i, j] += pmi
                        ig_sum[i, j] += ig
                        cnt[i, j] += 1
                k += 1
    return pmi_sum / cnt, ig_sum / cnt, p0


# ---------------------------------------------------------------------------------------------
# against the reference
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("K,stride", [(4, 2), (5, 3), (12, 1)])
def test_constant_sampler_n1_equals_grey_patch_log_ratio(tiny, image, K, stride):
    n_patches = len(_positions(12, K, stride)) ** 2
    fills = [[torch.full((3, K, K), 0.5)] for _ in range(n_patches)]
    ref_pmi, ref_ig, p0 = slow_reference(tiny, image, K, stride, fills)
    for target in (0, 2):
        r = explain(tiny, image, "pmi-ig", target=target, K=K, N=1, stride=stride, sampler="constant", value=0.5)
        np.testing.assert_allclose(r.maps["pmi"], ref_pmi[target], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r.maps["ig"], ref_ig, rtol=1e-5, atol=1e-7)
        assert r.meta["units"] == {"pmi": "bits", "ig": "bits"} and r.meta["patches"] == n_patches
    assert np.abs(ref_pmi).max() > 0.05  # the test is not vacuous


def test_stochastic_sampler_marginalises_with_the_mean_of_probabilities(tiny, image):
    K, stride, N, seed = 4, 4, 5, 3
    # the in-fills run() draws: same sampler, same generator, same fixed order
    boxes = S.patch_boxes(12, 12, K, stride)
    sampler = S.make_sampler("noise", K, torch.device("cpu"))
    fills = S.InFills(sampler, image[None], torch.tensor(boxes[:, 1]), torch.tensor(boxes[:, 0]), N, seed).all()
    ref_pmi, ref_ig, _ = slow_reference(tiny, image, K, stride, fills)
    r = explain(tiny, image, "pmi-ig", target=1, K=K, N=N, stride=stride, sampler="noise", seed=seed, batch_size=7)
    np.testing.assert_allclose(r.maps["pmi"], ref_pmi[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r.maps["ig"], ref_ig, rtol=1e-5, atol=1e-7)
    # the mean of log-probabilities would differ by a clear margin (Jensen)
    with torch.no_grad():
        lp = torch.stack([torch.log_softmax(tiny.logits01(S.paste(image[None], torch.tensor([0] * N), torch.tensor([0] * N), fills[0])).double(), 1)])
    assert abs(float(lp[0].exp().mean(0).log()[1] - lp[0].mean(0)[1])) > 1e-3


def test_distribute_matches_a_pixel_loop():
    rng = np.random.default_rng(0)
    boxes = S.patch_boxes(9, 11, 3, 2)
    v = rng.normal(size=(len(boxes), 2))
    out = distribute(v, boxes, (9, 11))
    ref = np.zeros((2, 9, 11))
    cnt = np.zeros((9, 11))
    for (x0, y0, x1, y1), val in zip(boxes, v):
        ref[:, y0:y1, x0:x1] += val[:, None, None]
        cnt[y0:y1, x0:x1] += 1
    np.testing.assert_allclose(out, ref / cnt, rtol=1e-12)
    np.testing.assert_allclose(distribute(v[:, 0], boxes, (9, 11)), ref[0] / cnt, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# properties (Eq. 5) and the extras
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["noise", "blur", "mean", "constant"])
def test_ig_is_the_expected_pmi_and_never_negative(tiny, image, sampler):
    r = explain(tiny, image, "pmi-ig", K=4, N=4, stride=2, sampler=sampler, seed=0)
    ex = r.extras
    p = ex["probs"]
    np.testing.assert_allclose(p.sum(), 1, rtol=1e-9)
    # at the patch level, before averaging: IG_r = Σ_c p(c|x) PMI_c,r
    np.testing.assert_allclose(ex["patch_ig"], ex["patch_pmi"].astype(np.float64) @ p, rtol=1e-4, atol=1e-7)
    # and consequently after the averaging, with the PMI maps of all classes
    expected = sum(p[c] * pmi_map(ex, c).astype(np.float64) for c in range(len(p)))
    np.testing.assert_allclose(r.maps["ig"], expected, rtol=1e-4, atol=1e-7)
    assert (ex["patch_ig"] >= 0).all() and (r.maps["ig"] >= 0).all()
    assert r.maps["ig"].max() > 1e-3
    np.testing.assert_array_equal(ig_map(ex), r.maps["ig"])
    np.testing.assert_allclose(pmi_map(ex, r.meta["target"]), r.maps["pmi"], rtol=1e-5, atol=1e-6)
    # log2 p(c|x_\r) = logp - patch_pmi is a distribution for every patch
    q = 2.0 ** (ex["logp"][None] - ex["patch_pmi"])
    np.testing.assert_allclose(q.sum(1), 1, rtol=1e-4)


def test_an_input_independent_classifier_gives_zero_maps(image):
    class Const(nn.Module):
        def __init__(self):
            super().__init__()
            self.b = nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))

        def forward(self, x):
            return self.b.expand(x.shape[0], -1) + 0 * x.mean()

    clf = Classifier("const", Const(), ["a", "b", "c"], (12, 12))
    r = explain(clf, image, "pmi-ig", K=4, N=3, stride=4, sampler="noise")
    np.testing.assert_allclose(r.maps["pmi"], 0, atol=1e-9)
    np.testing.assert_allclose(r.maps["ig"], 0, atol=1e-9)


def test_pmi_map_of_any_class_needs_no_new_forwards(tiny, image):
    calls = []
    handle = tiny.net.register_forward_hook(lambda *a: calls.append(1))
    try:
        r = explain(tiny, image, "pmi-ig", target=0, K=4, N=2, stride=4, sampler="noise")
        n = len(calls)
        maps = [pmi_map(r.extras, c) for c in range(4)]
        assert len(calls) == n
    finally:
        handle.remove()
    r3 = explain(tiny, image, "pmi-ig", target=3, K=4, N=2, stride=4, sampler="noise")
    np.testing.assert_allclose(maps[3], r3.maps["pmi"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ExplainerError, match="out of range"):
        pmi_map(r.extras, 4)


# ---------------------------------------------------------------------------------------------
# batching, seeds, progress, the shared model, bad parameters
# ---------------------------------------------------------------------------------------------
def test_results_do_not_depend_on_the_batch_size(tiny, image):
    outs = [explain(tiny, image, "pmi-ig", K=4, N=3, stride=2, sampler="noise", seed=5, batch_size=b) for b in (1, 7, 64, 1000)]
    for o in outs[1:]:
        for k in ("pmi", "ig"):
            np.testing.assert_allclose(o.maps[k], outs[0].maps[k], rtol=1e-5, atol=1e-6)  # float32 forwards


def test_seeds_repeat_and_differ(tiny, image):
    a = explain(tiny, image, "pmi-ig", K=4, N=2, stride=4, sampler="noise", seed=1)
    b = explain(tiny, image, "pmi-ig", K=4, N=2, stride=4, sampler="noise", seed=1)
    c = explain(tiny, image, "pmi-ig", K=4, N=2, stride=4, sampler="noise", seed=2)
    np.testing.assert_array_equal(a.maps["pmi"], b.maps["pmi"])
    assert not np.allclose(a.maps["pmi"], c.maps["pmi"])


def test_deterministic_samplers_run_one_forward_per_patch(tiny, image):
    r = explain(tiny, image, "pmi-ig", K=4, N=8, stride=4, sampler="mean")
    assert r.meta["N_effective"] == 1 and r.meta["forwards"] == r.meta["patches"] + 1
    r1 = explain(tiny, image, "pmi-ig", K=4, N=1, stride=4, sampler="mean")
    np.testing.assert_allclose(r.maps["pmi"], r1.maps["pmi"])


def test_progress_reports_and_cancels(tiny, image):
    seen = []
    explain(tiny, image, "pmi-ig", K=4, N=2, stride=4, sampler="noise", batch_size=4, progress=lambda d, t, m="": seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] and len(seen) > 3
    assert all(b[0] >= a[0] for a, b in zip(seen, seen[1:]))

    def cancel(d, t, m=""):
        if d > 5:
            raise Cancelled()

    with pytest.raises(Cancelled):
        explain(tiny, image, "pmi-ig", K=4, N=2, stride=4, sampler="noise", batch_size=4, progress=cancel)


def test_the_shared_model_is_left_alone(tiny, image):
    before = {k: v.clone() for k, v in tiny.net.state_dict().items()}
    explain(tiny, image, "pmi-ig", K=4, N=2, stride=4, sampler="noise")
    for k, v in tiny.net.state_dict().items():
        assert torch.equal(v, before[k])
    assert not tiny.net.training and not any(p.requires_grad for p in tiny.net.parameters())
    for m in tiny.net.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks


@pytest.mark.parametrize(
    "params, words",
    [
        ({"N": 0}, "N must be"),
        ({"stride": 0}, "stride must be"),
        ({"K": 0}, "K must be"),
        ({"K": 4, "stride": 5}, "at most K"),
        ({"sampler": "bogus"}, "'bogus' is not one of patchsampler"),
        ({"value": 1.5}, "value must be"),
        ({"batch_size": 0}, "batch_size must be"),
        ({"sigma": -1.0}, "sigma must be"),
        ({"N": "two"}, "cannot read"),
    ],
)
def test_bad_parameters_are_one_line_errors(params, words):
    with pytest.raises(ExplainerError) as e:
        make_config("pmi-ig", **params)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_patch_larger_than_the_image_is_an_error(tiny, image):
    with pytest.raises(ExplainerError, match="larger than the image"):
        explain(tiny, image, "pmi-ig", K=13, stride=1, sampler="constant")
    r = explain(tiny, image, "pmi-ig", K=12, stride=1, sampler="constant")  # one patch: the whole image
    assert r.meta["patches"] == 1 and np.ptp(r.maps["pmi"]) == 0


def test_missing_patchsampler_for_k_is_a_clear_error(tiny, image, tmp_path):
    with pytest.raises(ExplainerError, match="fit --explainer patchsampler"):
        explain(tiny, image, "pmi-ig", K=3, stride=3, sampler="patchsampler", sampler_data=str(tmp_path))


def test_patchsampler_temperature_reaches_the_in_fills(tiny, image, tmp_path, monkeypatch):
    """The ``temperature`` knob is the PatchSampler's: at T = 0 its N in-fills are the one greedy
    in-fill, so the seed no longer matters; at T = 1 it does. Out-of-range T is a one-line error."""
    from explainers.fitted import save_fitted
    from explainers.methods.samplers.fits import ARCH

    monkeypatch.setenv("EXPLAINERS_HOME", str(tmp_path))
    torch.manual_seed(0)
    save_fitted(tmp_path / "fitted" / "samplers" / "tiny-t" / "patchsampler_k4.safetensors", S.PatchSamplerNet(4, 3, width=8, head=8),
                {"K": 4, "channels": 3, "width": 8, "head": 8, "mixtures": 4, "arch": ARCH})
    run = lambda T, seed: explain(tiny, image, "pmi-ig", K=4, stride=4, N=3, sampler="patchsampler",  # noqa: E731
                                  sampler_data="tiny-t", temperature=T, seed=seed)
    cold = run(0.0, 0)
    assert cold.meta["sampler_temperature"] == 0.0
    np.testing.assert_array_equal(cold.maps["pmi"], run(0.0, 1).maps["pmi"])
    assert not np.array_equal(run(1.0, 0).maps["pmi"], run(1.0, 1).maps["pmi"])
    assert not np.array_equal(cold.maps["pmi"], run(1.0, 0).maps["pmi"])
    with pytest.raises(ExplainerError, match="temperature"):
        run(2.5, 0)


# ---------------------------------------------------------------------------------------------
# trained models and committed samplers
# ---------------------------------------------------------------------------------------------
def _embedded(model_id):
    from explainers.classifiers.embedded import load_embedded

    try:
        return load_embedded(model_id, torch.device("cpu"))
    except (ExplainerError, ImportError) as e:  # weights not trained yet / zoo module not there
        pytest.skip(str(e))


def _committed(key):
    path = S.COMMITTED / key / "patchsampler.safetensors"
    if not path.exists():
        pytest.skip(f"no committed PatchSampler for {key}")
    return json.loads(path.with_suffix(".json").read_text())


@pytest.mark.parametrize("key", ["shapes", "digits", "photos"])
def test_committed_samplers_beat_the_gaussian_on_held_out_pixels(key):
    """The paper's Fig. 3: the PatchSampler models the pixel distribution better than the
    conditional Gaussian — in negative log-likelihood of the hidden pixels of held-out data (bits
    per pixel and channel; the val split, or for photos whole pictures never fitted on), both
    measured by the fitter on the same crops, against the Gaussian's JOINT density of the patch
    (discretised to the 256 levels), the one its in-fills are drawn from."""
    card = _committed(key)
    g = json.loads((S.COMMITTED / key / "gaussian.json").read_text())
    assert card["config"]["K"] == 8 and card["config"]["arch"] == S.fits.ARCH
    assert card["val_from"] == g["val_from"] and card["val_from"] != "training images (fresh crops)"
    assert card["val_bits_per_subpixel"] < g["val_bits_per_subpixel"]
    assert card["val_bits_per_subpixel"] < 8.0  # better than uniform over 256 levels
    if key == "photos":
        assert not set(card["held_out"]) & set(card["photos"])


@pytest.mark.slow
def test_ig_and_true_class_pmi_concentrate_on_the_shape():
    from explainers.data import load_dataset

    clf = _embedded("shapes-resnet")
    _committed("shapes")
    ds = load_dataset("shapes", "test", limit=12)
    wins_ig = wins_pmi = 0
    for item in ds:
        r = explain(clf, item.image, "pmi-ig", target=item.label, K=8, N=4, stride=8, batch_size=256)
        m = item.mask
        wins_ig += r.maps["ig"][m].mean() > r.maps["ig"][~m].mean()
        wins_pmi += r.maps["pmi"][m].mean() > r.maps["pmi"][~m].mean()
    assert wins_ig >= 10 and wins_pmi >= 10, (wins_ig, wins_pmi)


@pytest.mark.slow
def test_class_vs_class_each_shape_supports_its_own_class():
    """Fig. 5 / 20: on two-shape images, each shape supports its own class more than the rival's."""
    from explainers.data import load_dataset

    clf = _embedded("shapes-resnet")
    _committed("shapes")
    ds = load_dataset("shapes-two", "test", limit=10)
    wins = 0
    for item in ds:
        (c1, c2), masks = item.extra["labels"], item.extra["masks"]
        r = explain(clf, item.image, "pmi-ig", target=c1, K=8, N=4, stride=8, batch_size=256)
        d = pmi_map(r.extras, c1) - pmi_map(r.extras, c2)
        wins += d[masks[..., 0]].mean() > d[masks[..., 1]].mean()
    assert wins >= 8, wins


def test_cli_explain_pmi_ig(tmp_path):
    from PIL import Image

    from explainers.__main__ import main

    _embedded("digits-cnn")
    _committed("digits")
    img = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (28, 28, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "maps.npz"
    rc = main(["explain", "--model", "digits-cnn", "--device", "cpu", "--image", str(img), "--method", "pmi-ig", "--set", "N=2", "--set", "stride=8", "--out", str(out)])
    assert rc == 0
    with np.load(out) as z:
        assert z["pmi"].shape == (28, 28) and z["ig"].min() >= 0
        meta = json.loads(str(z["meta"]))
    assert meta["sampler"] == "patchsampler" and meta["sampler_data"] == "digits" and meta["params"]["N"] == 2
    assert main(["explain", "--model", "digits-cnn", "--device", "cpu", "--image", str(img), "--method", "pmi-ig", "--set", "K=40", "--out", str(out)]) == 2


def test_natural_photo_sampler_is_the_default_for_models_without_a_dataset(tiny):
    assert S.sampler_key(tiny) == "photos"
    tiny_shapes = Classifier("t", tiny.net, tiny.labels, (12, 12), dataset="shapes-biased")
    expected = "shapes-biased" if (S.COMMITTED / "shapes-biased").is_dir() else "shapes"
    assert S.sampler_key(tiny_shapes) == expected


def test_bf16_forwards_give_nearly_the_same_maps():
    """bfloat16 autocast (the GPU path's option; CPU autocast here) moves PMI by little on a real
    classifier: the maps correlate with the float32 ones and their largest difference is a small
    share of their range. (Its error is absolute, ~1e-3 bits: maps whose values are that small drown.)"""
    from explainers import load_classifier
    from explainers.data import load_dataset

    clf = load_classifier("shapes-resnet", device="cpu")
    x = load_dataset("shapes", "test", limit=1)[0].image
    f32 = explain(clf, x, "pmi-ig", K=8, stride=8, N=1, sampler="blur")
    b16 = explain(clf, x, "pmi-ig", K=8, stride=8, N=1, sampler="blur", bf16=True)
    for name in ("pmi", "ig"):
        a, b = np.asarray(f32.maps[name], np.float64), np.asarray(b16.maps[name], np.float64)
        assert not np.array_equal(a, b), "bf16 changed nothing: the option is not applied"
        assert np.abs(a - b).max() <= 0.05 * np.ptp(a), (name, np.abs(a - b).max(), np.ptp(a))
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98, name
