"""Sanity checks compare like with like (issue 19): every network's map is made the same way (a fitted
part in use is refitted on every network, the per-image mode runs on every network), and every
result carries the reference ρ, a second run on the unchanged network made the same way."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from explainers import explain, sanity
from explainers.errors import ExplainerError
from explainers.sanity import same_way


@pytest.fixture()
def calls(monkeypatch):
    """Every explanation the check makes: (classifier id, parameters, meta)."""
    seen = []
    real = same_way.explain

    def spy(clf, x, method, target=None, **params):
        r = real(clf, x, method, target=target, **params)
        seen.append((clf.id, dict(params), dict(r.meta)))
        return r

    monkeypatch.setattr(same_way, "explain", spy)
    return seen


@pytest.fixture()
def tiny_fits(monkeypatch):
    """Tiny fits of the amortised parts: a few images and steps (the defaults take a minute)."""
    F = sanity.NETWORK_FITS
    monkeypatch.setitem(F, "varsal", dataclasses.replace(F["varsal"], samples=12, short={
        "steps": 2, "width": 0.125, "batch_size": 4, "val_size": 4, "eval_every": 1, "checkpoint_every": 100}))
    monkeypatch.setitem(F, "dcontrol", dataclasses.replace(F["dcontrol"], samples=12, short={
        "epochs": 1, "filter_steps": 2, "batch_size": 4, "val_size": 4, "width": 4, "checkpoint_every": 100}))


def _x(side=12, seed=1):
    return torch.rand(3, side, side, generator=torch.Generator().manual_seed(seed))


def test_every_result_carries_the_reference(tiny_cnn, calls):
    clf = tiny_cnn(12, 3, (4, 4), seed=0)
    x = _x()
    # deterministic: the same run again, rho 1
    r = sanity.cascading_randomisation(clf, x, "saliency", target=0)
    assert r.reference_spearman == pytest.approx(1.0) and "deterministic" in r.reference_how
    assert r.as_dict()["reference"]["spearman"] == pytest.approx(1.0)
    # stochastic: seed + 1 on the unchanged network, the very map explain gives with that seed
    calls.clear()
    r = sanity.cascading_randomisation(clf, x, "rise", target=0, masks=64, seed=0)
    ref = explain(clf, x, "rise", target=0, masks=64, seed=1).maps[r.map_name]
    np.testing.assert_allclose(r.reference_map, ref)
    assert r.reference_spearman == pytest.approx(sanity.similarity(r.maps[0], ref)["spearman"])
    assert r.reference_spearman < 0.999 and "seed 1" in r.reference_how
    ids = [c[0] for c in calls]
    assert ids[:2] == [clf.id, clf.id] and all("~randomised" in i for i in ids[2:])
    assert [c[1].get("seed", 0) for c in calls] == [0, 1] + [0] * (len(calls) - 2)  # only the reference changes seed


def test_the_evaluation_reports_the_reference_beside_the_sanity_figure(tiny_cnn, tmp_path):
    from explainers.data.base import ArrayDataset
    from explainers.evaluation import evaluate, read_results

    clf = tiny_cnn(12, 3, (4,), seed=0)
    imgs = (np.random.default_rng(0).random((2, 12, 12, 3)) * 255).astype(np.uint8)
    ds = ArrayDataset("tiny", "test", ["a", "b", "c"], imgs, np.array([0, 1]))
    out = tmp_path / "r.jsonl"
    rows = evaluate(clf, ds, "rise", ["sanity", "sanity-reference"], out, {"masks": 32})
    assert len(rows) == 2 and all(-1 <= r["sanity"] <= 1 and -1 <= r["sanity-reference"] < 1 for r in rows)
    assert read_results(out)[0]["sanity"] == 2  # files of the old figure are refused, not mixed in
    from explainers.evaluation import header

    h = lambda m, p: header(clf, ds, m, ["sanity"], p, "x", "label", 0)  # noqa: E731
    assert h("mipin", {})["sanity_fit"] == {"samples": 2000, "holdout": 0}  # fits of another size are not mixed in
    assert h("varsal", {})["sanity_fit"]["steps"] == 100 and "sanity_fit" not in h("varsal", {"mode": "per-image"})
    assert "sanity_fit" not in h("rise", {})


@pytest.mark.parametrize("method, per_image", [("varsal", {"mode": "per-image", "steps": 3, "n_mc": 2}),
                                               ("dcontrol", {"generator": "optimise", "iterations": 3})])
def test_amortised_methods_are_refitted_on_every_network_or_per_image_on_all(tiny_cnn, calls, tiny_fits, one_thread,
                                                                             method, per_image, monkeypatch):
    monkeypatch.setenv("EXPLAINERS_HOME", "/nonexistent-sanity-home")  # no user fit can be picked up
    clf = tiny_cnn(12, 3, (4, 4), seed=0, dataset="shapes")
    x = _x()
    param = sanity.NETWORK_FITS[method].param
    r = sanity.cascading_randomisation(clf, x, method, target=0, steps=2)
    assert r.fit is not None and r.fit["fitter"] == method and "seed 1" in r.reference_how
    assert len(calls) == 4 and all(c[2]["amortised"] for c in calls)  # original, reference, 2 randomised
    paths = [c[1][param] for c in calls]
    assert len(set(paths)) == 4 and all("explainers-sanity-" in p for p in paths)  # each network its own fit
    assert [c[0] for c in calls][:2] == [clf.id, clf.id] and np.isfinite(r.reference_spearman)
    calls.clear()
    r = sanity.cascading_randomisation(clf, x, method, target=0, steps=2, method_params=per_image)
    assert r.fit is None and len(calls) == 4 and not any(c[2]["amortised"] for c in calls)
    assert np.isfinite(r.reference_spearman) and "seed 1" in r.reference_how
    with pytest.raises(ExplainerError, match="leave it out"):  # a fit made for one network cannot serve them all
        sanity.cascading_randomisation(clf, x, method, target=0, **{param: "some.safetensors"})


def test_amortised_varsal_map_never_calls_the_classifier(tiny_cnn, tiny_fits, one_thread, tmp_path, monkeypatch):
    """Why the refit: with a fixed encoder, the map is the same whatever the classifier's weights."""
    monkeypatch.setenv("EXPLAINERS_HOME", str(tmp_path))
    clf = tiny_cnn(12, 3, (4,), seed=0, dataset="shapes")
    rclf = sanity.fully_randomised(clf)
    with sanity.NetworkFits("varsal") as fits:
        enc = fits.params(clf)["encoder"]
        a = explain(clf, _x(), "varsal", encoder=enc).maps["mean"]
        with pytest.raises(ExplainerError, match="fitted for"):  # a fit belongs to its network: refused for the copy...
            explain(rclf, _x(), "varsal", encoder=enc)
        same_id = dataclasses.replace(rclf, id=clf.id)
        c = explain(same_id, _x(), "varsal", encoder=enc).maps["mean"]  # ...and were it used, nothing would change
    assert not torch.equal(rclf.net[0].weight, clf.net[0].weight)
    np.testing.assert_array_equal(a, c)
