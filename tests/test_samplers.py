"""PMI's samplers: patch geometry, the samplers' conditioning, the conditional Gaussian, the
PatchSampler network, the look-inside helper and the PatchSampler fitter (tiny runs)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from explainers.errors import Cancelled, ExplainerError
from explainers.methods import samplers as S
from explainers.fitted import save_fitted


# ---------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size,K,stride", [(12, 4, 3), (64, 8, 4), (28, 8, 4), (10, 10, 1), (17, 5, 5)])
def test_patches_lie_inside_and_cover_every_pixel(size, K, stride):
    boxes = S.patch_boxes(size, size + 1, K, stride)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= size + 1).all() and (boxes[:, 3] <= size).all()
    assert ((boxes[:, 2] - boxes[:, 0]) == K).all() and ((boxes[:, 3] - boxes[:, 1]) == K).all()
    cover = np.zeros((size, size + 1), int)
    for x0, y0, x1, y1 in boxes:
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1
    pos = S.patch_positions(size, K, stride)
    assert pos[0] == 0 and pos[-1] == size - K and (np.diff(pos) <= stride).all() and (np.diff(pos) > 0).all()


def test_neighbourhoods_are_centred_on_the_patch_with_reflect_padding():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 11, 13, generator=g)
    K = 3
    y0, x0 = torch.tensor([0, 4, 8]), torch.tensor([0, 5, 10])
    nb = S.neighbourhoods(x, y0, x0, K)
    assert nb.shape == (3, 3, 9, 9)
    ref = np.pad(x[0].numpy(), ((0, 0), (K, K), (K, K)), mode="reflect")
    for i in range(3):
        yy, xx = int(y0[i]), int(x0[i])
        np.testing.assert_array_equal(nb[i].numpy(), ref[:, yy : yy + 3 * K, xx : xx + 3 * K])
        np.testing.assert_array_equal(nb[i, :, K : 2 * K, K : 2 * K].numpy(), x[0, :, yy : yy + K, xx : xx + K].numpy())


def test_paste_writes_only_the_patch():
    x = torch.zeros(1, 3, 8, 9)
    fills = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2) + 1
    out = S.paste(x, torch.tensor([1, 6]), torch.tensor([7, 0]), fills)
    assert out.shape == (2, 3, 8, 9)
    np.testing.assert_array_equal(out[0, :, 1:3, 7:9].numpy(), fills[0].numpy())
    np.testing.assert_array_equal(out[1, :, 6:8, 0:2].numpy(), fills[1].numpy())
    assert float(out.abs().sum()) == float(fills.sum())
    assert float(x.abs().sum()) == 0  # the input is not modified


# ---------------------------------------------------------------------------------------------
# categorical sampling and the conditional Gaussian
# ---------------------------------------------------------------------------------------------
def test_inverse_cdf_sampling_follows_the_probabilities():
    g = torch.Generator().manual_seed(1)
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3], [0.0, 0.0, 0.0, 1.0]])
    u = torch.rand(2, 40000, generator=g)
    idx = S.sample_categorical(probs, u)
    freq = torch.stack([torch.bincount(idx[i], minlength=4).float() / idx.shape[1] for i in range(2)])
    np.testing.assert_allclose(freq.numpy(), probs.numpy(), atol=0.01)
    assert (idx[1] == 3).all() and not (idx[0] == 1).any()


def test_conditional_gaussian_matches_the_schur_complement():
    rng = np.random.default_rng(0)
    K, C = 1, 2
    D = C * 9
    a = rng.normal(size=(D, D))
    cov = a @ a.T / D + np.eye(D) * 0.1
    mean = rng.normal(size=D)
    st = S.gaussian_from_moments(torch.tensor(mean), torch.tensor(cov), K, C, eps=0.0)
    hole = np.zeros((C, 3, 3), bool)
    hole[:, 1, 1] = True
    hole = hole.ravel()
    sa, sb = np.flatnonzero(hole), np.flatnonzero(~hole)
    A = cov[np.ix_(sa, sb)] @ np.linalg.inv(cov[np.ix_(sb, sb)])
    cond = cov[np.ix_(sa, sa)] - A @ cov[np.ix_(sb, sa)]
    np.testing.assert_allclose(st["A"].numpy(), A, rtol=1e-4, atol=1e-5)
    L = st["L"].double().numpy()
    np.testing.assert_allclose(L @ L.T, cond, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# the PatchSampler network
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("K,C", [(1, 3), (2, 1), (4, 3), (5, 3), (8, 1)])
def test_patchsampler_net_gives_a_categorical_per_pixel_of_the_centre(K, C):
    torch.manual_seed(0)
    net = S.PatchSamplerNet(K, C, width=8).eval()
    out = net(torch.rand(2, C, 3 * K, 3 * K))
    assert out.shape == (2, K, K, C, S.LEVELS)


def test_patchsampler_net_ignores_the_hidden_patch():
    torch.manual_seed(0)
    net = S.PatchSamplerNet(4, 3, width=8).eval()
    nb = torch.rand(3, 3, 12, 12)
    other = nb.clone()
    other[:, :, 4:8, 4:8] = torch.rand(3, 3, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(net(nb), net(other))
        other[:, :, 0, 0] += 0.5  # ... but not the ring
        assert not torch.allclose(net(nb), net(other))


# ---------------------------------------------------------------------------------------------
# every sampler sees only the ring of the neighbourhood
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted_dir(tmp_path_factory):
    """A folder holding a tiny (untrained) PatchSampler and a Gaussian for K = 4."""
    d = tmp_path_factory.mktemp("samplers")
    K, C = 4, 3
    torch.manual_seed(0)
    net = S.PatchSamplerNet(K, C, width=8)
    save_fitted(d / "patchsampler_k4.safetensors", net, {"K": K, "channels": C, "width": 8})
    D = C * (3 * K) ** 2
    a = torch.randn(D, D, dtype=torch.float64) / D**0.5
    st = S.gaussian_from_moments(torch.full((D,), 0.5, dtype=torch.float64), a @ a.T * 0.01, K, C)
    save_fitted(d / "gaussian_k4.safetensors", st, {"K": K, "channels": C})
    return d


@pytest.mark.parametrize("name", S.SAMPLERS)
def test_in_fills_depend_only_on_the_ring(name, fitted_dir):
    K, N = 4, 5
    s = S.make_sampler(name, K, torch.device("cpu"), key=str(fitted_dir), value=0.25)
    g = torch.Generator().manual_seed(0)
    nb = torch.rand(6, 3, 12, 12, generator=g)
    other = nb.clone()
    other[:, :, 4:8, 4:8] = torch.rand(6, 3, 4, 4, generator=g)
    d1 = s.draws(6, N, torch.Generator().manual_seed(3))
    d2 = s.draws(6, N, torch.Generator().manual_seed(3))
    f1, f2 = s.fill(nb, d1, N), s.fill(other, d2, N)
    assert f1.shape == (6, N, 3, K, K)
    assert float(f1.min()) >= 0 and float(f1.max()) <= 1
    torch.testing.assert_close(f1, f2)
    if name == "constant":
        assert torch.all(f1 == 0.25)
    if name == "mean":
        ring = S.hole_mask(K)
        torch.testing.assert_close(f1[0, 0, :, 0, 0], (nb[0] * ring).sum((1, 2)) / ring.sum())
    if s.deterministic:
        torch.testing.assert_close(f1, f1[:, :1].expand_as(f1))
    else:
        assert not torch.allclose(f1[:, 0], f1[:, 1])  # N different draws


def test_blur_in_fill_of_a_flat_ring_is_flat():
    s = S.make_sampler("blur", 4, torch.device("cpu"))
    nb = torch.full((1, 3, 12, 12), 0.3)
    nb[:, :, 4:8, 4:8] = 1.0  # hidden
    torch.testing.assert_close(s.fill(nb, None, 1), torch.full((1, 1, 3, 4, 4), 0.3))


def test_unknown_sampler_and_missing_fit_are_clear_errors(fitted_dir):
    with pytest.raises(ExplainerError, match="unknown sampler"):
        S.make_sampler("bogus", 4, torch.device("cpu"))
    with pytest.raises(ExplainerError, match=r"K=6.*fit --explainer patchsampler.*K=6"):
        S.make_sampler("patchsampler", 6, torch.device("cpu"), key=str(fitted_dir))


def test_look_inside_helper(fitted_dir):
    x = torch.rand(3, 20, 20, generator=torch.Generator().manual_seed(0))
    out = S.infills(str(fitted_dir), x, (16, 3), K=4, N=6, sampler="patchsampler", seed=1)
    assert out["neighbourhood"].shape == (3, 12, 12) and out["infills"].shape == (6, 3, 4, 4)
    assert out["filled"].shape == (6, 3, 12, 12) and out["hole"].sum() == 16
    np.testing.assert_array_equal(out["neighbourhood"][:, 4:8, 4:8], x[:, 3:7, 16:20].numpy())
    np.testing.assert_array_equal(out["filled"][:, :, 4:8, 4:8], out["infills"])
    np.testing.assert_array_equal(out["filled"][:, :, :4], np.repeat(out["neighbourhood"][None, :, :4], 6, 0))
    again = S.infills(str(fitted_dir), x, (16, 3), K=4, N=6, sampler="patchsampler", seed=1)
    np.testing.assert_array_equal(out["infills"], again["infills"])
    # the levels are 8-bit grey levels
    np.testing.assert_allclose(out["infills"] * 255, np.round(out["infills"] * 255), atol=1e-4)
    with pytest.raises(ExplainerError, match="inside"):
        S.infills(str(fitted_dir), x, (17, 3), K=4, N=2, sampler="noise")


# ---------------------------------------------------------------------------------------------
# the fitter (tiny runs on random images)
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def tiny_images(monkeypatch):
    from explainers.training import patchsampler as P

    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (20, 24, 3), dtype=np.uint8) for _ in range(5)]
    imgs[0][...] = 7  # a flat image
    monkeypatch.setattr(P, "training_images", lambda data, limit: [im.copy() for im in imgs])
    monkeypatch.setattr(P, "_validation_crops", lambda data, src, K, cfg: (src.sample(16, torch.Generator().manual_seed(0)), "test"))
    return P


def test_crops_match_slicing(tiny_images):
    P = tiny_images
    imgs = P.training_images("x", 5)
    src = P.CropSource(imgs, 4)
    crops = src.sample(20, torch.Generator().manual_seed(0), flip=False)
    assert crops.shape == (20, 3, 12, 12) and crops.dtype == torch.uint8
    padded = [np.pad(im, ((4, 4), (4, 4), (0, 0)), mode="reflect").transpose(2, 0, 1) for im in imgs]
    # every crop is a window of one padded image whose centre lies inside the original image
    for c in crops.numpy():
        assert any(
            np.array_equal(c, p[:, y : y + 12, x : x + 12]) for p in padded for y in range(0, 17) for x in range(0, 21)
        )


def test_fit_writes_weights_config_and_resumes_exactly(tiny_images, tmp_path):
    P = tiny_images
    opts = dict(K="4", steps="30", batch="4", width="8", gaussian_patches="500", checkpoint_every="10")
    full = P.fit(None, "tiny", out_dir=str(tmp_path / "a"), **opts)
    card = json.loads(full.with_suffix(".json").read_text())
    assert card["config"]["K"] == 4 and card["config"]["channels"] == 3 and card["steps_done"] == 30
    assert (tmp_path / "a" / "gaussian_k4.safetensors").exists()
    assert not (tmp_path / "a" / "patchsampler_k4.ckpt.safetensors").exists()

    def stop_at_20(done, total, msg=""):
        if done == 20:
            raise Cancelled()

    with pytest.raises(Cancelled):
        P.fit(None, "tiny", out_dir=str(tmp_path / "b"), progress=stop_at_20, **opts)
    assert (tmp_path / "b" / "patchsampler_k4.ckpt.safetensors").exists()
    resumed = P.fit(None, "tiny", out_dir=str(tmp_path / "b"), **opts)
    from safetensors.torch import load_file

    a, b = load_file(str(full)), load_file(str(resumed))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    # the fitted sampler is found by folder and used for K = 4
    s = S.make_sampler("patchsampler", 4, torch.device("cpu"), key=str(tmp_path / "a"))
    assert s.channels == 3


def test_grey_data_gets_a_one_channel_sampler(tiny_images, monkeypatch, tmp_path):
    P = tiny_images
    rng = np.random.default_rng(1)
    grey = [np.repeat(rng.integers(0, 255, (16, 16, 1), dtype=np.uint8), 3, axis=2) for _ in range(3)]
    monkeypatch.setattr(P, "training_images", lambda data, limit: grey)
    path = P.fit(None, "grey", out_dir=str(tmp_path), K="4", steps="3", batch="2", width="4", gaussian_patches="300")
    assert json.loads(path.with_suffix(".json").read_text())["config"]["channels"] == 1
    s = S.make_sampler("patchsampler", 4, torch.device("cpu"), key=str(tmp_path))
    f = s.fill(torch.rand(2, 3, 12, 12), s.draws(2, 3, torch.Generator().manual_seed(0)), 3)
    torch.testing.assert_close(f[:, :, 0], f[:, :, 1])  # grey in-fills: R = G = B
    g = S.make_sampler("gaussian", 4, torch.device("cpu"), key=str(tmp_path))
    f = g.fill(torch.rand(2, 3, 12, 12), g.draws(2, 3, torch.Generator().manual_seed(0)), 3)
    torch.testing.assert_close(f[:, :, 0], f[:, :, 2])


def test_bad_fit_options_are_one_line_errors(tiny_images, tmp_path):
    P = tiny_images
    with pytest.raises(ExplainerError, match="unknown parameter"):
        P.fit(None, "tiny", out_dir=str(tmp_path), bogus="1")
    with pytest.raises(ExplainerError, match="steps must be positive"):
        P.fit(None, "tiny", out_dir=str(tmp_path), steps="0")


def test_in_fills_are_the_same_however_the_batches_fall():
    x = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    boxes = S.patch_boxes(40, 40, 4, 2)
    y0, x0 = torch.tensor(boxes[:, 1]), torch.tensor(boxes[:, 0])
    N = 3
    s = S.make_sampler("noise", 4, torch.device("cpu"))
    ref = S.InFills(s, x, y0, x0, N, seed=4).all()
    assert ref.shape == (len(boxes), N, 3, 4, 4) and len(boxes) > 3 * S.CHUNK
    for bs in (1, 5, 200, 5000):
        stream = S.InFills(s, x, y0, x0, N, seed=4)
        jobs = torch.arange(len(boxes) * N)
        got = torch.cat([stream.take(j // N, j % N) for j in jobs.split(bs)])
        torch.testing.assert_close(got, ref.reshape(-1, 3, 4, 4), rtol=0, atol=0)
        assert len(stream._cache) <= 2 + bs // (S.CHUNK * N)  # only the chunks in use are kept
    other = S.InFills(s, x, y0, x0, N, seed=5).all()
    assert not torch.equal(other, ref)
