"""scripts/imagenet_table.py: the real-network table runs on one photograph, resumes, and its drop
is the deletion curve's point with the blur fill."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def table(script):
    return script("imagenet_table")


def test_drop_is_the_deletion_curve_with_blur_at_that_fraction(table, tiny_cnn):
    from explainers.metrics import deletion_curve

    clf = tiny_cnn(20, classes=3, widths=(4, 4), seed=1, scale=0.5)
    x = torch.rand(3, 20, 20, generator=torch.Generator().manual_seed(0))
    s = np.random.default_rng(0).random((20, 20))
    s[:5] = 2.0  # a tie group cut by the 10% (25% of the pixels): blended proportionally by both
    p, pb = table.top_blur_drop(clf, x, s, 1, fraction=0.1, sigma=2.0)
    fr, curve = deletion_curve(clf, x, s, 1, steps=10, baseline="blur", blur_sigma=2.0)
    assert fr[1] == pytest.approx(0.1)
    assert p == pytest.approx(curve[0], abs=1e-6) and pb == pytest.approx(curve[1], abs=1e-6)
    assert table.tied_at(s, 0.1) == pytest.approx(0.25)
    # the cross-check fill (--fill mean): the same point of the deletion curve with the mean colour
    p, pm = table.top_blur_drop(clf, x, s, 1, fraction=0.1, fill="mean")
    fr, curve = deletion_curve(clf, x, s, 1, steps=10, baseline="mean")
    assert pm == pytest.approx(curve[1], abs=1e-6) and pm != pytest.approx(pb, abs=1e-6)
    # blur rows keep the keys they had before --fill existed; other fills get their own
    k = table.row_key("m", "coffee", "dssr", None, 16, 0.1, None)
    assert k == table.row_key("m", "coffee", "dssr", None, 16, 0.1, None, "blur") != table.row_key(
        "m", "coffee", "dssr", None, 16, 0.1, None, "mean")


def test_specs_and_controls(table):
    assert table.split_specs("a,b[k=1,j=2], c") == ["a", "b[k=1,j=2]", "c"]
    assert table.parse_spec("dssr[lr=0.05, iterations=10]") == ("dssr", {"lr": "0.05", "iterations": "10"},
                                                                 "dssr[iterations=10,lr=0.05]")
    sq = table.random_square_map((50, 40), 0.1, seed=3)
    top = table.reveal_masks(sq, [0.1])[0]
    ys, xs = np.nonzero(sq == sq.max())
    assert top.sum() == pytest.approx(200) and np.all(top[ys, xs] == 1)  # side 14: 196, + 4 spread over the first ring
    assert np.ptp(ys) == np.ptp(xs) == 13  # a 14 × 14 square at the top


def test_one_photograph_with_fast_settings_and_resume(table, tmp_path, capsys):
    out = tmp_path / "rows.jsonl"
    args = ["--photos", "coffee", "--methods", "gradcam,random", "--steps", "2", "--draws", "1", "--out", str(out),
            "--per-photo"]
    assert table.main(args) == 0
    text = capsys.readouterr().out
    assert "| gradcam | 1 |" in text and "| random | 1 |" in text and "espresso" in text
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["method"] for r in rows] == ["gradcam", "random"]
    for r in rows:
        assert r["target_label"] == "espresso" and -1 <= r["drop"] <= 1 and 0 <= r["deletion"] <= 1 and 0 <= r["insertion"] <= 1
    assert rows[0]["seconds"] > 0 and rows[1]["seconds"] is None
    assert table.main(args + ["--json"]) == 0  # everything is in the file: nothing is computed again
    assert len(out.read_text().splitlines()) == 2
    data = json.loads(capsys.readouterr().out)
    assert [s["method"] for s in data["summary"]] == ["gradcam", "random"]
    assert table.main(["--photos", "nowhere", "--out", str(out)]) == 2
