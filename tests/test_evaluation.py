"""Dataset evaluation: rows written as they come, resumption after an interruption (nothing
recomputed, the same result as an uninterrupted run), summaries with confidence intervals, the CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from explainers import evaluation as E
from explainers.__main__ import main
from explainers.data import ArrayDataset
from explainers.errors import Cancelled, ExplainerError

S = 16


@pytest.fixture
def clf(tiny_cnn):
    return tiny_cnn(S, 3, widths=(6, 6), pool=2, scale=0.3, name="tiny-eval")


def tiny_dataset(n: int = 6, with_boxes: bool = True) -> ArrayDataset:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(n, S, S, 3), dtype=np.uint8)
    boxes = np.array([[2, 2, 9, 9]] * n)
    masks = np.zeros((n, S, S), bool)
    masks[:, 2:9, 2:9] = True
    return ArrayDataset("tiny", "test", ["a", "b", "c"], images, np.arange(n) % 3,
                        masks if with_boxes else None, boxes if with_boxes else None)


METRICS = ["pointing", "bbox-accuracy", "deletion", "insertion", "kl"]


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.fixture
def counted(monkeypatch):
    """Count the explanations the evaluation computes."""
    calls = []
    real = E.explain

    def explain(clf, image, method, target=None, **kw):
        calls.append(target)
        return real(clf, image, method, target=target, **kw)

    monkeypatch.setattr(E, "explain", explain)
    return calls


def test_rows_header_and_summary(clf, tmp_path):
    ds = tiny_dataset()
    out = tmp_path / "r.jsonl"
    seen = []
    rows = E.evaluate(clf, ds, "saliency", METRICS, out, progress=lambda d, t, m="": seen.append((d, t)))
    assert [r["index"] for r in rows] == list(range(6))
    assert [r["target"] for r in rows] == [0, 1, 2, 0, 1, 2]  # the true class
    lines = out.read_text().splitlines()
    assert json.loads(lines[0])["header"]["method"] == "saliency" and len(lines) == 7
    assert seen[-1] == (6, 6)
    for r in rows:
        assert r["pointing"] in (0.0, 1.0) and 0 <= r["bbox-accuracy"] <= 1 and 0 <= r["deletion"] <= 1 and r["kl"] >= 0
    summ = E.summarise(rows, METRICS)
    from scipy import stats

    v = np.array([r["deletion"] for r in rows])
    lo, hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    assert summ["deletion"]["mean"] == pytest.approx(v.mean())
    assert summ["deletion"]["ci95"] == pytest.approx([lo, hi])
    table = E.summary_table({"saliency": summ}, METRICS)
    assert "| saliency |" in table and "deletion ↓" in table and "pointing ↑" in table


def test_interrupted_run_resumes_without_recomputing(clf, tmp_path, counted):
    ds = tiny_dataset()
    full = E.evaluate(clf, ds, "saliency", METRICS, tmp_path / "full.jsonl")
    assert len(counted) == 6
    counted.clear()

    out = tmp_path / "cut.jsonl"

    def stop_after_3(done, total, message=""):
        if done == 3:
            raise Cancelled()

    with pytest.raises(Cancelled):
        E.evaluate(clf, ds, "saliency", METRICS, out, progress=stop_after_3)
    assert len(counted) == 3
    assert E.done_indices(out) == {0, 1, 2}  # finished images are on disk
    counted.clear()
    resumed = E.evaluate(clf, ds, "saliency", METRICS, out)
    assert len(counted) == 3  # only images 3, 4, 5
    assert _strip(resumed) == _strip(full)
    counted.clear()
    again = E.evaluate(clf, ds, "saliency", METRICS, out)
    assert counted == [] and _strip(again) == _strip(full)


def test_a_line_cut_by_a_kill_is_redone(clf, tmp_path, counted):
    ds = tiny_dataset(4)
    out = tmp_path / "r.jsonl"
    full = E.evaluate(clf, ds, "saliency", METRICS, out, limit=2)
    with out.open("a") as f:
        f.write('{"index": 2, "target": 2, "poin')  # the process died mid-line
    counted.clear()
    rows = E.evaluate(clf, ds, "saliency", METRICS, out)
    assert len(counted) == 2 and [r["index"] for r in rows] == [0, 1, 2, 3]
    assert _strip(rows[:2]) == _strip(full)
    assert all(json.loads(line) for line in out.read_text().splitlines())  # the file is clean again


def test_a_larger_limit_extends_a_finished_run(clf, tmp_path, counted):
    ds = tiny_dataset()
    out = tmp_path / "r.jsonl"
    E.evaluate(clf, ds, "saliency", ["deletion"], out, limit=2)
    counted.clear()
    rows = E.evaluate(clf, ds, "saliency", ["deletion"], out, limit=5)
    assert len(counted) == 3 and len(rows) == 5


def test_other_settings_are_refused_not_mixed(clf, tmp_path):
    ds = tiny_dataset(2)
    out = tmp_path / "r.jsonl"
    E.evaluate(clf, ds, "saliency", ["deletion"], out)
    with pytest.raises(ExplainerError, match="other settings"):
        E.evaluate(clf, ds, "saliency", ["deletion"], out, params={"abs": False})
    with pytest.raises(ExplainerError, match="other settings"):
        E.evaluate(clf, ds, "integrated-gradients", ["deletion"], out)


def test_box_metrics_are_none_without_boxes(clf, tmp_path):
    ds = tiny_dataset(3, with_boxes=False)
    rows = E.evaluate(clf, ds, "saliency", ["pointing", "deletion"], tmp_path / "r.jsonl")
    assert all(r["pointing"] is None for r in rows)
    s = E.summarise(rows, ["pointing", "deletion"])
    assert s["pointing"]["n"] == 0 and s["deletion"]["n"] == 3


def test_bad_input_is_an_explainer_error(clf, tmp_path):
    ds = tiny_dataset(2)
    with pytest.raises(ExplainerError, match="unknown metric"):
        E.evaluate(clf, ds, "saliency", ["nope"], tmp_path / "a.jsonl")
    with pytest.raises(ExplainerError, match="unknown method"):
        E.evaluate(clf, ds, "nope", ["deletion"], tmp_path / "b.jsonl")
    with pytest.raises(ExplainerError, match="unknown parameter"):
        E.evaluate(clf, ds, "saliency", ["deletion"], tmp_path / "c.jsonl", params={"bogus": 1})
    assert not (tmp_path / "c.jsonl").exists()
    assert E.parse_metrics("all,sanity") == list(E.DEFAULT_METRICS) + ["sanity"]


def test_sanity_and_label_metrics(clf, tmp_path):
    ds = tiny_dataset(2)
    rows = E.evaluate(clf, ds, "saliency", ["sanity", "label-sensitivity"], tmp_path / "r.jsonl")
    for r in rows:
        assert -1 <= r["sanity"] <= 1 and -1 <= r["label-sensitivity"] <= 1
    assert all(not math.isnan(r["sanity"]) for r in rows)


def test_sanity_metric_fits_mipin_on_each_network(tmp_path, monkeypatch):
    """MIP-IN has no per-image mode: the dataset sanity metric fits it on the original and on the
    randomised network the same way (it used to fail with 'no fitted inverses'), and a second fit on
    other images of the unchanged network gives the reference (smaller fits than the default 2,000
    images here, for speed)."""
    import dataclasses

    from explainers import load_classifier, sanity
    from explainers.data import load_dataset

    monkeypatch.setitem(sanity.NETWORK_FITS, "mipin", dataclasses.replace(sanity.NETWORK_FITS["mipin"], samples=300))
    clf = load_classifier("shapes-resnet", device="cpu")
    ds = load_dataset("shapes", "test", limit=3)
    rows = E.evaluate(clf, ds, "mipin", ["sanity", "sanity-reference"], tmp_path / "m.jsonl")
    values = np.array([r["sanity"] for r in rows], dtype=float)
    ref = np.array([r["sanity-reference"] for r in rows], dtype=float)
    assert len(values) == 3 and np.isfinite(values).all()
    assert np.abs(values).mean() < 0.6, values  # the map does not survive randomising the weights
    assert (ref > 0.8).all(), ref  # while two fits on the unchanged network agree: the difference is real


def test_cli_bad_input_exits_2(capsys, tmp_path):
    assert main(["evaluate", "--model", "no-such-model", "--method", "gradcam", "--data", "shapes", "--metric", "pointing"]) == 2
    assert main(["evaluate", "--model", "shapes-resnet", "--method", "gradcam", "--data", "shapes", "--metric", "nope"]) == 2
    assert main(["evaluate", "--model", "shapes-resnet", "--method", "gradcam", "--data", str(tmp_path / "missing"), "--metric", "pointing"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)


def test_cli_json_and_plot(capsys, tmp_path, monkeypatch):
    from explainers.classifiers.embedded import EMBEDDED

    if not EMBEDDED["shapes-resnet"].weights.exists():
        pytest.skip("shapes-resnet weights not trained yet")
    monkeypatch.setenv("EXPLAINERS_HOME", str(tmp_path))
    out, plot = tmp_path / "r.jsonl", tmp_path / "p.png"
    code = main(["evaluate", "--model", "shapes-resnet", "--method", "gradcam", "--data", "shapes", "--metric", "pointing,deletion",
                 "--limit", "3", "--out", str(out), "--json", "--plot", str(plot), "--device", "cpu"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 3 and res["metrics"]["pointing"]["n"] == 3 and 0 <= res["metrics"]["deletion"]["mean"] <= 1
    assert plot.stat().st_size > 1000
    # resumed: the same numbers, no new rows
    assert main(["evaluate", "--model", "shapes-resnet", "--method", "gradcam", "--data", "shapes", "--metric", "pointing,deletion",
                 "--limit", "3", "--out", str(out), "--json", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == res["metrics"]
    assert len(out.read_text().splitlines()) == 4


def test_targets_follow_class_names_and_boxes_become_masks(clf, tmp_path, counted):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(3, 2 * S, 2 * S, 3), dtype=np.uint8)  # twice the input size
    ds = ArrayDataset("folder", "all", ["c", "b", "a"], images, np.array([0, 1, 2]), None, np.array([[4, 4, 18, 18]] * 3))
    rows = E.evaluate(clf, ds, "saliency", ["pointing", "bbox-accuracy"], tmp_path / "r.jsonl")
    assert [r["target"] for r in rows] == [2, 1, 0]  # "c", "b", "a" in the classifier's labels
    assert all(r["pointing"] is not None for r in rows)
    m = E.object_mask(clf, ds[0].image, None, (4, 4, 18, 18))
    assert m.shape == (S, S) and m[2:9, 2:9].all() and m.sum() == 49  # the box, halved with the image
    unknown = ArrayDataset("folder", "all", ["x", "y", "z"], images, np.array([0, 1, 2]))
    rows = E.evaluate(clf, unknown, "saliency", ["deletion"], tmp_path / "u.jsonl")
    assert counted[-3:] == [None, None, None]  # unknown names: the predicted class
