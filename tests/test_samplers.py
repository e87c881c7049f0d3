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
from explainers.methods.samplers.fits import ARCH


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


def test_neighbourhoods_are_centred_on_the_patch_zero_padded_and_mark_what_is_known():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 11, 13, generator=g)
    K = 3
    y0, x0 = torch.tensor([0, 4, 8]), torch.tensor([0, 5, 10])
    nb = S.neighbourhoods(x, y0, x0, K)
    kn = S.known(11, 13, y0, x0, K)
    assert nb.shape == (3, 3, 9, 9) and kn.shape == (3, 1, 9, 9)
    ref = np.pad(x[0].numpy(), ((0, 0), (K, K), (K, K)))
    inside = np.pad(np.ones((11, 13)), K)
    hole = S.hole_mask(K).numpy()
    for i in range(3):
        yy, xx = int(y0[i]), int(x0[i])
        np.testing.assert_array_equal(nb[i].numpy(), ref[:, yy : yy + 3 * K, xx : xx + 3 * K])
        np.testing.assert_array_equal(nb[i, :, K : 2 * K, K : 2 * K].numpy(), x[0, :, yy : yy + K, xx : xx + K].numpy())
        np.testing.assert_array_equal(kn[i, 0].numpy(), inside[yy : yy + 3 * K, xx : xx + 3 * K] * hole)
    assert kn[1].sum() == 8 * K * K  # an interior patch knows its whole ring


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
def _random_moments(seed: int, K: int = 1, C: int = 2) -> tuple[int, int, np.ndarray, np.ndarray]:
    """K, C, a random positive-definite covariance and a mean over a 3K×3K×C neighbourhood."""
    rng = np.random.default_rng(seed)
    D = C * 9 * K * K
    a = rng.normal(size=(D, D))
    return K, C, a @ a.T / D + np.eye(D) * 0.1, rng.normal(size=D)


def test_conditional_gaussian_matches_the_schur_complement():
    K, C, cov, mean = _random_moments(0)
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


def test_border_patches_condition_the_gaussian_on_the_known_pixels_only():
    K, C, cov, mean = _random_moments(1)
    st = S.gaussian_from_moments(torch.tensor(mean), torch.tensor(cov), K, C, eps=0.0)
    g = S.ConditionalGaussian(st, {"K": K, "channels": C, "eps": 0.0})
    kn = torch.zeros(2, 3, 3)
    kn[0, 1:, 1:] = 1  # a top-left corner patch: the ring's lower-right part is inside the image
    kn[0, 1, 1] = 0
    known_px = kn[0].bool().expand(C, -1, -1).reshape(-1).numpy()
    hole = np.zeros((C, 3, 3), bool)
    hole[:, 1, 1] = True
    sa, sb = np.flatnonzero(hole.ravel()), np.flatnonzero(known_px)
    (rows0, (S0, A0, L0, off0)), (rows1, (S1, A1, L1, off1)) = sorted(g.given(kn), key=lambda r: -len(r[1][0]))
    np.testing.assert_array_equal(S0.numpy(), sb)
    A = cov[np.ix_(sa, sb)] @ np.linalg.inv(cov[np.ix_(sb, sb)])
    np.testing.assert_allclose(A0.numpy(), A, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose((L0 @ L0.T).numpy(), cov[np.ix_(sa, sa)] - A @ cov[np.ix_(sb, sa)], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(off0.numpy(), mean[sa] - A @ mean[sb], rtol=1e-4, atol=1e-5)
    assert len(S1) == 0  # knows nothing: the patch's marginal
    np.testing.assert_allclose((L1 @ L1.T).numpy(), cov[np.ix_(sa, sa)], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# the PatchSampler network
# ---------------------------------------------------------------------------------------------
def test_pixel_groups_go_coarse_to_fine_and_cover_the_patch():
    g = S.pixel_groups(8)
    assert torch.bincount(g.flatten()).tolist() == [1, 3, 4, 8, 16, 32]
    assert g[4, 4] == 0 and (g[::4, ::4] <= 1).all() and (g[2::4, 2::4] == 2).all()
    # every pixel of the last group has a drawn pixel left, right, above or below it
    drawn = torch.nn.functional.pad((g < 5).float()[None, None], (1, 1, 1, 1))[0, 0]
    nb = drawn[:-2, 1:-1] + drawn[2:, 1:-1] + drawn[1:-1, :-2] + drawn[1:-1, 2:]
    assert (nb[g == 5] > 0).all()
    assert sorted(torch.unique(S.pixel_groups(4)).tolist()) == [1, 2, 3, 4, 5]  # no centre group below K = 5


@pytest.mark.parametrize("K,C", [(1, 3), (2, 1), (4, 3), (5, 3), (8, 1)])
@torch.no_grad()
def test_patchsampler_net_shapes_and_exact_likelihood_of_its_draws(K, C):
    torch.manual_seed(0)
    net = S.PatchSamplerNet(K, C, width=8, head=8).eval()
    t = net.trunk(torch.rand(2, C, 3 * K, 3 * K))
    assert t.shape == (2, 8, K, K)
    levels = net.sample(t, torch.rand(2, 1 + C, K, K))
    assert levels.shape == (2, C, K, K) and levels.min() >= 0 and levels.max() <= 255
    lp = net.log_prob(t, levels.float() * 2 / 255 - 1)
    assert lp.shape == (2, K, K) and torch.isfinite(lp).all() and (lp <= 0).all()


@torch.no_grad()
def test_independent_pixels_ablation_factorises_and_coherent_groups_do_not():
    """coherent=False is the paper's model: each pixel's probability ignores the patch's other
    pixels; with the six groups, a later pixel's probability depends on the ones drawn before."""
    torch.manual_seed(0)
    K = 4
    x = torch.rand(2, 3, K, K) * 2 - 1
    y = x.clone()
    y[:, :, 0, 0] = -x[:, :, 0, 0]  # a pixel of the first group at K = 4 (i % 4 == 0, j % 4 == 0)
    for coherent in (False, True):
        net = S.PatchSamplerNet(K, 3, width=8, head=8, coherent=coherent).eval()
        t = net.trunk(torch.rand(2, 3, 3 * K, 3 * K))
        a, b = net.log_prob(t, x), net.log_prob(t, y)
        others = torch.ones(K, K, dtype=torch.bool)
        others[0, 0] = False
        assert not torch.allclose(a[:, 0, 0], b[:, 0, 0])
        assert torch.equal(a[:, others], b[:, others]) == (not coherent)
    assert S.pixel_groups(8, coherent=False).eq(0).all()


@torch.no_grad()
def test_patchsampler_probabilities_sum_to_one_and_draws_follow_them():
    torch.manual_seed(0)
    net = S.PatchSamplerNet(1, 1, width=8, head=8, mixtures=3).eval()
    t = net.trunk(torch.rand(1, 1, 3, 3))
    levels = (torch.arange(256).float() * 2 / 255 - 1).view(256, 1, 1, 1)
    p = net.log_prob(t.expand(256, -1, -1, -1), levels).exp().flatten()
    assert abs(float(p.sum()) - 1) < 1e-4
    n = 40000
    draws = net.sample(t.expand(n, -1, -1, -1), torch.rand(n, 2, 1, 1, generator=torch.Generator().manual_seed(1)))
    freq = torch.bincount(draws.flatten(), minlength=256).float() / n
    assert float((freq - p).abs().sum()) < 0.1  # total variation, sampling noise ~0.05


@torch.no_grad()
def test_patchsampler_colour_draws_follow_the_coupled_likelihood():
    torch.manual_seed(0)
    net = S.PatchSamplerNet(1, 3, width=8, head=8, mixtures=3).eval()
    # sharp logistics, so single colours are frequent enough to count
    net.out.bias[3 + 9 : 3 + 18] = -5.5
    net.out.weight.mul_(0.1)
    t = net.trunk(torch.rand(1, 3, 3, 3))
    n = 100000
    s = net.sample(t.expand(n, -1, -1, -1), torch.rand(n, 4, 1, 1, generator=torch.Generator().manual_seed(2)))
    keys, counts = torch.unique(s.view(n, 3), dim=0, return_counts=True)
    top = counts.argsort(descending=True)[:3]
    lp = net.log_prob(t.expand(3, -1, -1, -1), keys[top].float().view(3, 3, 1, 1) * 2 / 255 - 1)
    np.testing.assert_allclose((counts[top] / n).numpy(), lp.exp().flatten().numpy(), rtol=0.1)


# ---------------------------------------------------------------------------------------------
# the PatchSampler's sampling temperature (ours, beyond the paper)
# ---------------------------------------------------------------------------------------------
def _seeded_net_and_inputs(K: int, C: int):
    torch.manual_seed(0)
    net = S.PatchSamplerNet(K, C, width=8, head=8, mixtures=3).eval()
    g = torch.Generator().manual_seed(1)
    neigh = torch.rand(6, C, 3 * K, 3 * K, generator=g)
    return net, net.trunk(neigh).detach(), torch.rand(6, 1 + C, K, K, generator=g)


@pytest.mark.parametrize("K,C", [(8, 3), (8, 1), (4, 3)])
@torch.no_grad()
def test_temperature_one_is_the_sampler_as_it_was(K, C):
    """T = 1 draws exactly what the sampler drew before the knob existed (the fixture was written
    by the code without it, same net, neighbourhoods and uniforms)."""
    from pathlib import Path

    old = np.load(Path(__file__).parent / "fixtures" / "patchsampler_draws_t1.npz")[f"K{K}C{C}"]
    net, t, u = _seeded_net_and_inputs(K, C)
    np.testing.assert_array_equal(net.sample(t, u, temperature=1.0).numpy(), old)
    np.testing.assert_array_equal(net.sample(t, u).numpy(), old)


def _greedy_reference(net, t):
    """Slow obvious reference for T = 0, pixel by pixel: in each group, the likeliest mixture
    component's centre, G and B shifted by the pixel's R (and G) as the coupling says."""
    B, C, K = t.shape[0], net.channels, net.K
    canvas, filled = torch.zeros(B, C, K, K), torch.zeros(B, 1, K, K)
    for g in net.group_ids:
        target = (net.groups == g).float().expand(B, 1, K, K)
        logit_pi, mu, log_s, coef = net._split(net.params(t, canvas, filled, target))
        for b in range(B):
            for i, j in (net.groups == g).nonzero().tolist():
                k = int(np.argmax(logit_pi[b, :, i, j].numpy()))
                m, x = mu[b, k, :, i, j].tolist(), []
                if coef is not None:  # G += a·R, B += b·R + c·G (PixelCNN++), with the drawn R and G
                    a_, b_, c_ = coef[b, k, :, i, j].tolist()
                for c in range(C):
                    mc = m[c] + (0.0 if coef is None or c == 0 else a_ * x[0] if c == 1 else b_ * x[0] + c_ * x[1])
                    x.append(round((min(max(mc, -1.0), 1.0) + 1) * 255 / 2) * 2 / 255 - 1)
                canvas[b, :, i, j] = torch.tensor(x)
        filled = filled + target
    return torch.round((canvas + 1) * 255 / 2).long()


@pytest.mark.parametrize("C", [1, 3])
@torch.no_grad()
def test_temperature_zero_is_the_greedy_in_fill_and_small_temperatures_approach_it(C):
    net, t, u = _seeded_net_and_inputs(4, C)
    greedy = net.sample(t, u, temperature=0.0)
    torch.testing.assert_close(greedy, net.sample(t, torch.rand(u.shape, generator=torch.Generator().manual_seed(9)), 0.0),
                               rtol=0, atol=0)  # no randomness left
    ref = _greedy_reference(net, t)
    assert float((greedy - ref).abs().le(1).float().mean()) == 1.0  # ±1 level: rounding of float32 vs float64 sums
    assert float((greedy == ref).float().mean()) > 0.97
    near = net.sample(t, u, temperature=1e-4)
    assert float((near - greedy).abs().le(1).float().mean()) > 0.97
    assert not torch.equal(net.sample(t, u, 1.0), greedy)
    with pytest.raises(ValueError, match="temperature"):
        net.sample(t, u, temperature=-0.5)


@torch.no_grad()
def test_temperature_draws_follow_the_sharpened_mixture_and_spread_less():
    """At T the draws follow mixture weights softmax(logits / T) and logistic scales s·T (checked
    against those probabilities computed from the logistic CDF), and a lower T spreads less."""
    torch.manual_seed(0)
    net = S.PatchSamplerNet(1, 1, width=8, head=8, mixtures=3).eval()
    t = net.trunk(torch.rand(1, 1, 3, 3))
    target = torch.ones(1, 1, 1, 1)
    logit_pi, mu, log_s, _ = net._split(net.params(t, torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), target))
    n = 40000
    u = torch.rand(n, 2, 1, 1, generator=torch.Generator().manual_seed(1))
    edges = (torch.arange(257).double() - 0.5) * 2 / 255 - 1  # bin edges of the 256 levels on [-1, 1]
    edges[0], edges[-1] = -float("inf"), float("inf")  # the end levels take the tails
    spread = {}
    for T in (1.0, 0.5):
        w = torch.softmax(logit_pi.flatten().double() / T, 0)
        cdf = torch.sigmoid((edges[:, None] - mu.flatten().double()) / (log_s.flatten().double().exp() * T))
        p = (w * (cdf[1:] - cdf[:-1])).sum(1)
        draws = net.sample(t.expand(n, -1, -1, -1), u, T).flatten()
        freq = torch.bincount(draws, minlength=256).double() / n
        assert float((freq - p).abs().sum()) < 0.1  # total variation, sampling noise ~0.05
        spread[T] = float(draws.double().std())
    assert spread[0.5] < spread[1.0]


def test_patchsampler_net_reads_only_known_pixels():
    torch.manual_seed(0)
    net = S.PatchSamplerNet(4, 3, width=8, head=8).eval()
    nb = torch.rand(3, 3, 12, 12)
    kn = S.known(6, 6, torch.tensor([0, 1, 2]), torch.tensor([0, 2, 1]), 4)  # border patches of a 6×6 image
    other = torch.where(kn.bool(), nb, torch.rand(3, 3, 12, 12))
    with torch.no_grad():
        torch.testing.assert_close(net.trunk(nb, kn), net.trunk(other, kn), rtol=0, atol=0)
        r, c = kn[1, 0].nonzero()[0].tolist()
        other = nb.clone()
        other[:, :, r, c] += 0.5  # ... but it reads the known ring
        assert not torch.allclose(net.trunk(nb, kn)[1], net.trunk(other, kn)[1])


# ---------------------------------------------------------------------------------------------
# every sampler sees only the ring of the neighbourhood
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted_dir(tmp_path_factory):
    """A folder holding a tiny (untrained) PatchSampler and a Gaussian for K = 4."""
    d = tmp_path_factory.mktemp("samplers")
    K, C = 4, 3
    torch.manual_seed(0)
    net = S.PatchSamplerNet(K, C, width=8, head=8, mixtures=2)
    cfg = {"K": K, "channels": C, "width": 8, "head": 8, "mixtures": 2, "arch": ARCH}
    save_fitted(d / "patchsampler_k4.safetensors", net, cfg)
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
    f1, f2 = s.fill(nb, None, d1, N), s.fill(other, None, d2, N)
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


@pytest.mark.parametrize("name", S.SAMPLERS)
def test_no_pixel_of_a_hidden_border_patch_reaches_the_sampler(name, fitted_dir):
    """At every border position (stride 1, every patch whose neighbourhood leaves the image),
    changing only the hidden patch's pixels leaves the in-fills exactly unchanged: same draws,
    same in-fills, so the same distribution."""
    K, N, H, W = 4, 3, 11, 13
    s = S.make_sampler(name, K, torch.device("cpu"), key=str(fitted_dir), value=0.25)
    x = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(0))
    boxes = S.patch_boxes(H, W, K, 1)
    border = [b for b in boxes if b[0] < K or b[1] < K or b[2] > W - K or b[3] > H - K]
    assert len(border) == len(boxes) - (H - 3 * K + 1) * (W - 3 * K + 1) > 0
    ys, xs = torch.tensor([int(b[1]) for b in border]), torch.tensor([int(b[0]) for b in border])
    kn = S.known(H, W, ys, xs, K)
    same, changed = S.neighbourhoods(x, ys, xs, K), []
    for i, (x0, y0, x1, y1) in enumerate(border):
        other = x.clone()
        other[:, :, y0:y1, x0:x1] = torch.rand(1, 3, K, K, generator=torch.Generator().manual_seed(i))
        changed.append(S.neighbourhoods(other, ys[i : i + 1], xs[i : i + 1], K))
        if i in (0, len(border) - 1):  # the whole path, image to in-fills, for two of them
            a = S.InFills(s, x, ys[i : i + 1], xs[i : i + 1], N, seed=2).all()
            b = S.InFills(s, other, ys[i : i + 1], xs[i : i + 1], N, seed=2).all()
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    changed = torch.cat(changed)
    assert not torch.equal(same, changed)
    d = s.draws(len(border), N, torch.Generator().manual_seed(3))
    torch.testing.assert_close(s.fill(same, kn, d, N), s.fill(changed, kn, d, N), rtol=0, atol=0)
    if name == "patchsampler":  # the distribution itself
        with torch.no_grad():
            torch.testing.assert_close(s.net.trunk(same, kn), s.net.trunk(changed, kn), rtol=0, atol=0)


def test_blur_in_fill_of_a_flat_ring_is_flat():
    s = S.make_sampler("blur", 4, torch.device("cpu"))
    nb = torch.full((1, 3, 12, 12), 0.3)
    nb[:, :, 4:8, 4:8] = 1.0  # hidden
    torch.testing.assert_close(s.fill(nb, None, None, 1), torch.full((1, 1, 3, 4, 4), 0.3))
    kn = S.known(4, 4, torch.tensor([0]), torch.tensor([0]), 4)  # the patch is the whole image
    torch.testing.assert_close(s.fill(nb, kn, None, 1), torch.full((1, 1, 3, 4, 4), 0.5))  # nothing known: grey


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
    assert crops.shape == (20, 4, 12, 12) and crops.dtype == torch.uint8
    # zero padding and an inside-the-image plane: nothing of the image is copied outwards
    padded = [np.concatenate([np.pad(im, ((4, 4), (4, 4), (0, 0))), np.pad(np.ones(im.shape[:2] + (1,), np.uint8), ((4, 4), (4, 4), (0, 0)))],
                             axis=2).transpose(2, 0, 1) for im in imgs]
    # every crop is a window of one padded image whose centre lies inside the original image
    for c in crops.numpy():
        assert c[3, 4:8, 4:8].all()
        assert any(
            np.array_equal(c, p[:, y : y + 12, x : x + 12]) for p in padded for y in range(0, 17) for x in range(0, 21)
        )
    inner = src.sample(50, torch.Generator().manual_seed(1), interior=True)
    assert inner[:, 3].all()  # the Gaussian's crops lie wholly inside


def test_no_pixel_of_a_hidden_border_patch_reaches_the_sampler_at_fit_time(tiny_images):
    """The training crops: changing only the centre's pixels of a border crop changes nothing the
    network reads (its features, the likelihood of a given centre), at every border position."""
    P = tiny_images
    K = 4
    img = P.training_images("x", 5)[1]
    torch.manual_seed(0)
    net = S.PatchSamplerNet(K, 3, width=8, head=8).eval()
    H, W = img.shape[:2]
    border = [(y, x) for y in range(H - K + 1) for x in range(W - K + 1) if min(y, x) < K or y > H - 2 * K or x > W - 2 * K]
    assert len(border) > 40
    a, b = [], []
    for y, x in border:
        other = img.copy()
        other[y : y + K, x : x + K] = 255 - other[y : y + K, x : x + K]
        a.append(P.CropSource([img], K).crops_at([0], [y], [x]))
        b.append(P.CropSource([other], K).crops_at([0], [y], [x]))
    na, ka, xa = P.batch_tensors(torch.cat(a), net)
    nb, kb, xb = P.batch_tensors(torch.cat(b), net)
    assert not torch.equal(xa, xb)  # the centres differ ...
    torch.testing.assert_close(ka, kb, rtol=0, atol=0)  # ... nothing else the network reads does
    with torch.no_grad():
        ta, tb = net.trunk(na, ka), net.trunk(nb, kb)
        torch.testing.assert_close(ta, tb, rtol=0, atol=0)
        torch.testing.assert_close(net.log_prob(ta, xa), net.log_prob(tb, xa), rtol=0, atol=0)


def test_focused_crops_are_chosen_by_the_ring_alone(tiny_images):
    P = tiny_images
    src = P.CropSource(P.training_images("x", 5), 4)
    cand = src.sample(40, torch.Generator().manual_seed(0))
    other = cand.clone()
    other[:, :3, 4:8, 4:8] = 255 - other[:, :3, 4:8, 4:8]  # other centres, same rings

    class Fixed:
        K = 4

        def __init__(self, crops):
            self.crops, self.at = crops, 0

        def sample(self, n, gen):
            self.at += n
            return self.crops[self.at - n : self.at]

    a = P.focused_crops(Fixed(cand), 16, 0.5, None)
    b = P.focused_crops(Fixed(other), 16, 0.5, None)
    assert a.shape == (16, 4, 12, 12)
    torch.testing.assert_close(a[:, :, :4], b[:, :, :4], rtol=0, atol=0)  # the same crops were chosen
    assert not torch.equal(a, b)


def test_fit_writes_weights_config_and_resumes_exactly(tiny_images, tmp_path):
    P = tiny_images
    opts = dict(K="4", steps="30", batch="4", width="8", head="8", gaussian_patches="500", checkpoint_every="10")
    full = P.fit(None, "tiny", out_dir=str(tmp_path / "a"), **opts)
    card = json.loads(full.with_suffix(".json").read_text())
    assert card["config"]["K"] == 4 and card["config"]["channels"] == 3 and card["steps_done"] == 30
    assert card["command"].startswith("python -m explainers fit --explainer patchsampler --data tiny --set K=4")
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


def test_fit_can_start_from_fitted_weights(tiny_images, tmp_path):
    """``init`` loads a fitted sampler's weights (same network) and the card records which; a
    different network is a one-line error."""
    P = tiny_images
    opts = dict(K="4", batch="4", width="8", head="8", gaussian_patches="200")
    first = P.fit(None, "tiny", out_dir=str(tmp_path / "a"), steps="10", warmup="0", **opts)  # away from the seeded start
    # one step at a tiny learning rate (1e-6 / 100 in the warm-up): the weights stay the ones loaded
    more = P.fit(None, "tiny", out_dir=str(tmp_path / "b"), steps="1", lr="1e-6", init=str(first), **opts)
    from safetensors.torch import load_file

    a, b = load_file(str(first)), load_file(str(more))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    fresh = load_file(str(P.fit(None, "tiny", out_dir=str(tmp_path / "c"), steps="1", lr="1e-6", **opts)))
    assert not all(torch.allclose(a[k], fresh[k], atol=1e-3) for k in a)  # without init: a random start
    card = json.loads(more.with_suffix(".json").read_text())
    assert card["init_from"]["path"] == str(first) and card["init_from"]["steps_done"] == 10
    assert "--set init=" in card["command"]
    with pytest.raises(ExplainerError, match="different network: width=8 \\(here 16\\)"):
        P.fit(None, "tiny", out_dir=str(tmp_path / "d"), steps="1", init=str(first), **{**opts, "width": "16"})
    with pytest.raises(ExplainerError, match="no such fitted file"):
        P.fit(None, "tiny", out_dir=str(tmp_path / "d"), steps="1", init=str(tmp_path / "nothing.safetensors"), **opts)


def test_grey_data_gets_a_one_channel_sampler(tiny_images, monkeypatch, tmp_path):
    P = tiny_images
    rng = np.random.default_rng(1)
    grey = [np.repeat(rng.integers(0, 255, (16, 16, 1), dtype=np.uint8), 3, axis=2) for _ in range(3)]
    monkeypatch.setattr(P, "training_images", lambda data, limit: grey)
    path = P.fit(None, "grey", out_dir=str(tmp_path), K="4", steps="3", batch="2", width="4", head="4", gaussian_patches="300")
    assert json.loads(path.with_suffix(".json").read_text())["config"]["channels"] == 1
    s = S.make_sampler("patchsampler", 4, torch.device("cpu"), key=str(tmp_path))
    f = s.fill(torch.rand(2, 3, 12, 12), None, s.draws(2, 3, torch.Generator().manual_seed(0)), 3)
    torch.testing.assert_close(f[:, :, 0], f[:, :, 1])  # grey in-fills: R = G = B
    g = S.make_sampler("gaussian", 4, torch.device("cpu"), key=str(tmp_path))
    f = g.fill(torch.rand(2, 3, 12, 12), None, g.draws(2, 3, torch.Generator().manual_seed(0)), 3)
    torch.testing.assert_close(f[:, :, 0], f[:, :, 2])


def test_bad_fit_options_are_one_line_errors(tiny_images, tmp_path):
    P = tiny_images
    with pytest.raises(ExplainerError, match="unknown parameter"):
        P.fit(None, "tiny", out_dir=str(tmp_path), bogus="1")
    with pytest.raises(ExplainerError, match="steps must be at least 1"):
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


# ---------------------------------------------------------------------------------------------
# scripts/sampler_table.py (Fig. 13 / 14 measurements)
# ---------------------------------------------------------------------------------------------
def test_frechet_distance_matches_the_matrix_square_root(script):
    from scipy.linalg import sqrtm

    T = script("sampler_table")
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 5))
    b = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5)) + 0.5
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    mu = a.mean(0) - b.mean(0)
    ref = mu @ mu + np.trace(sa + sb - 2 * np.real(sqrtm(sa @ sb)))
    assert abs(T.frechet(a, b) - ref) < 1e-6 * max(1.0, ref)
    assert abs(T.frechet(a, a)) < 1e-8


def test_grid_in_fill_replaces_a_quarter_of_the_pixels(script):
    T = script("sampler_table")
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = T.grid_infilled(x, S.make_sampler("constant", 8, torch.device("cpu"), value=2.0), seed=0)
    changed = (out != x).any(1)[0]
    assert float(changed.float().mean()) == 0.25 and changed[:8, :8].all() and not changed[:8, 8:16].any()


def test_sampler_table_runs_on_two_images(capsys, script):
    if not (S.COMMITTED / "shapes" / "patchsampler.safetensors").exists():
        pytest.skip("no committed shapes sampler")
    T = script("sampler_table")
    assert T.main(["--data", "shapes", "--nll-images", "2", "--fd-images", "2", "--auc-images", "2", "--N", "1"]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("| ") and not ln.startswith(("| sampler ", "| ---"))]
    assert [ln.split("|")[1].strip() for ln in lines] == [name for name, _ in T.SAMPLERS]
    assert "| noise | 8.000 |" in out  # uniform over 256 levels


def test_sampler_table_temperature_rows_and_repeated_fd_draws(capsys, script):
    if not (S.COMMITTED / "shapes" / "patchsampler.safetensors").exists():
        pytest.skip("no committed shapes sampler")
    T = script("sampler_table")
    assert T.main(["--data", "shapes", "--nll-images", "1", "--fd-images", "3", "--auc-images", "0", "--samplers",
                   "patchsampler,grey", "--temperature", "0.5,1", "--fd-draws", "2"]) == 0
    rows = [ln.split("|")[1:-1] for ln in capsys.readouterr().out.splitlines() if ln.startswith(("| patchsampler", "| grey"))]
    assert [r[0].strip() for r in rows] == ["patchsampler (T = 0.5)", "patchsampler", "grey"]
    lo, hi = (float(v) for v in rows[0][3].split("(")[1].rstrip(") ").split("–"))
    assert lo < float(rows[0][3].split()[0]) < hi  # two draws of a random sampler: a mean inside its range
    assert "(" not in rows[2][3] and rows[2][4].strip() == "—"  # a deterministic sampler is drawn once; no AUCs asked
