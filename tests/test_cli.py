"""The command line: exit codes, one-line errors, JSON output."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explainers.__main__ import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def shape_png(tmp_path):
    from explainers.data import load_dataset

    item = load_dataset("shapes", "test", limit=1)[0]
    p = tmp_path / "shape.png"
    item.image.save(p)
    return p, item.label


def run(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_models_lists_embedded_and_torchvision(capsys):
    code, out, _ = run(["models", "--json"], capsys)
    assert code == 0
    rows = {r["id"]: r for r in json.loads(out)}
    assert rows["shapes-resnet"]["available"]
    assert "tv-resnet50" in rows
    for r in rows.values():
        assert r["available"] or (r["reason"] and "\n" not in r["reason"])


def test_predict_json_top1_is_the_true_class(shape_png, capsys):
    path, label = shape_png
    code, out, _ = run(["predict", "--model", "shapes-resnet", "--image", str(path), "--topk", "3", "--json", "--device", "cpu"], capsys)
    assert code == 0
    top = json.loads(out)["top"]
    assert len(top) == 3 and top[0]["index"] == label
    assert sum(t["probability"] for t in top) <= 1 + 1e-6


@pytest.mark.parametrize(
    "args, words",
    [
        (["predict", "--model", "no-such-model", "--image", "x.png"], "unknown model"),
        (["predict", "--model", "shapes-resnet", "--image", "/no/such/file.png"], ""),
        (["predict", "--model", "shapes-resnet", "--image", "{text}"], ""),
        (["predict", "--model", "shapes-resnet", "--image", "{png}", "--topk", "0"], "topk"),
        (["predict", "--model", "shapes-resnet"], "--image"),
        (["explain", "--model", "shapes-resnet", "--image", "{png}", "--method", "nope", "--out", "o.npz"], "unknown method"),
        (["explain", "--model", "shapes-resnet", "--image", "{png}", "--method", "nope", "--set", "K", "--out", "o.npz"], ""),
        (["frobnicate"], "invalid choice"),
        (["fit", "--explainer", "nope", "--data", "shapes"], "unknown explainer"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, words, capsys, tmp_path, shape_png):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    args = [a.format(text=text, png=shape_png[0]) for a in args]
    code, out, err = run(args, capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert words in err
    assert "Traceback" not in err


def test_module_entry_point_in_a_subprocess(tmp_path):
    """`python -m explainers` itself: exit code and stderr as a user sees them."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    bad = subprocess.run([sys.executable, "-m", "explainers", "predict", "--model", "shapes-resnet", "--image", str(tmp_path / "missing.png")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    ok = subprocess.run([sys.executable, "-m", "explainers", "models"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert ok.returncode == 0 and "shapes-resnet" in ok.stdout


def test_cache_info_and_clear(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EXPLAINERS_HOME", str(tmp_path))
    monkeypatch.setenv("EXPLAINERS_CACHE_MAX_BYTES", "5M")
    entry = tmp_path / "results" / "rise" / "0123.npz"
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"x" * 1000)
    code, out, _ = run(["cache", "--info"], capsys)
    assert code == 0
    assert str(tmp_path / "results") in out and "entries: 1" in out and "1000 bytes" in out and "5000000 bytes" in out
    code, out, _ = run(["cache", "--clear"], capsys)
    assert code == 0 and "removed 1 entries" in out and not entry.exists()
    assert "entries: 0" in run(["cache", "--info"], capsys)[1]
    for args in (["cache"], ["cache", "--info", "--clear"], ["cache", "--size"]):
        code, _, err = run(args, capsys)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    monkeypatch.setenv("EXPLAINERS_CACHE_MAX_BYTES", "lots")
    code, _, err = run(["cache", "--info"], capsys)
    assert code == 2 and "EXPLAINERS_CACHE_MAX_BYTES" in err and err.count("\n") == 1


def test_sampler_nll_measures_every_patch_and_refuses_bad_input(tmp_path, capsys):
    """`sampler-nll`: every non-overlapping K×K patch of every image (recursive, *.mask.png skipped)."""
    import torch

    from explainers.data import load_dataset
    from explainers.fitted import save_fitted
    from explainers.methods import samplers as S
    from explainers.methods.samplers.fits import ARCH

    fit = tmp_path / "fit"
    K, C = 4, 3
    torch.manual_seed(0)
    net = S.PatchSamplerNet(K, C, width=8, head=8, mixtures=2)
    save_fitted(fit / "patchsampler_k4.safetensors", net, {"K": K, "channels": C, "width": 8, "head": 8, "mixtures": 2, "arch": ARCH})
    D = C * (3 * K) ** 2
    a = torch.randn(D, D, dtype=torch.float64) / D**0.5
    save_fitted(fit / "gaussian_k4.safetensors", S.gaussian_from_moments(torch.full((D,), 0.5, dtype=torch.float64), a @ a.T * 0.01, K, C),
                {"K": K, "channels": C})
    imgs = tmp_path / "imgs"
    (imgs / "sub").mkdir(parents=True)
    for i, item in enumerate(load_dataset("shapes", "test", limit=3)):
        item.image.save(imgs / ("sub" if i else "") / f"{i}.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(imgs / "0.mask.png")
    opts = {"--images": str(imgs), "--fit": str(fit), "--K": "4", "--device": "cpu", "--sampler": "patchsampler"}

    def cli(**over):
        return ["sampler-nll"] + [v for k, val in {**opts, **{f"--{n}": v for n, v in over.items()}}.items() for v in (k, val)]

    got = {}
    for sampler in ("patchsampler", "gaussian", "noise", "mean"):
        code, out, _ = run(cli(sampler=sampler) + ["--json"], capsys)
        assert code == 0
        got[sampler] = json.loads(out)
        assert set(got[sampler]) == {"bits_per_subpixel", "roughness", "real_roughness", "patches"}
        assert got[sampler]["patches"] == 3 * (64 // 4) ** 2
    assert 0 < got["patchsampler"]["bits_per_subpixel"] < 16 and got["noise"]["bits_per_subpixel"] == 8.0
    assert got["mean"]["bits_per_subpixel"] is None and got["mean"]["roughness"] == 0.0
    assert len({round(g["real_roughness"], 9) for g in got.values()}) == 1 and got["noise"]["roughness"] > 30
    code, out, _ = run(cli(sampler="gaussian", limit="1"), capsys)
    assert code == 0 and "256 patches" in out and "bits per subpixel" in out
    for over, words in (({"images": str(tmp_path / "none")}, "not a folder"), ({"sampler": "bogus"}, "unknown sampler"),
                        ({"K": "8"}, "K=8"), ({"limit": "0"}, "limit"), ({"images": str(fit)}, "no images"),
                        ({"K": "x"}, "K")):
        code, _, err = run(cli(**over), capsys)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and words in err, (over, err)
