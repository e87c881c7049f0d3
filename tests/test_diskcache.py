"""The disk cache: a second call (another process, after a restart) reads the stored result."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from explainers.classifiers.base import Classifier
from explainers.diskcache import cached_explain


def _clf():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    return Classifier("tiny-cache", net, ["a", "b", "c"], (12, 12))


def test_second_call_hits_and_returns_the_same_maps(tmp_path):
    clf = _clf()
    x = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(0))
    first = cached_explain(clf, x, "rise", target=1, directory=tmp_path, masks=50, seed=1)
    second = cached_explain(clf, x, "rise", target=1, directory=tmp_path, masks=50, seed=1)
    assert first.meta["cached"] is False and second.meta["cached"] is True
    np.testing.assert_array_equal(first.maps["rise"], second.maps["rise"])
    assert second.meta["params"] == first.meta["params"]
    # any change of config, target or image is a different entry
    assert cached_explain(clf, x, "rise", target=1, directory=tmp_path, masks=50, seed=2).meta["cached"] is False
    assert cached_explain(clf, x, "rise", target=0, directory=tmp_path, masks=50, seed=1).meta["cached"] is False
    assert cached_explain(clf, x.flip(2), "rise", target=1, directory=tmp_path, masks=50, seed=1).meta["cached"] is False


def test_corrupt_entry_is_recomputed(tmp_path):
    clf = _clf()
    x = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(0))
    cached_explain(clf, x, "rise", directory=tmp_path, masks=20)
    (entry,) = (tmp_path / "rise").glob("*.npz")
    entry.write_bytes(b"garbage")
    again = cached_explain(clf, x, "rise", directory=tmp_path, masks=20)
    assert again.meta["cached"] is False and again.maps["rise"].shape == (12, 12)


# -- never a stale map: the key changes with everything that makes the map ---------------------------
from explainers import explain, load_classifier  # noqa: E402
from explainers import diskcache, fitted  # noqa: E402


def _fresh(clf, image, method, cache, **params):
    """A cached call that must miss, and the map a fresh ``explain`` gives now."""
    got = cached_explain(clf, image, method, directory=cache, **params)
    want = explain(clf, image, method, **params)
    assert got.meta["cached"] is False, "served a stale map"
    for k, v in want.maps.items():
        np.testing.assert_array_equal(got.maps[k], v)
    return got


def _save_resnet18(path, seed):
    import json

    import torchvision
    from safetensors.torch import save_file

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = torchvision.models.resnet18(weights=None, num_classes=3)
    save_file(net.state_dict(), str(path), metadata={"explainers": json.dumps({"input_size": [32, 32]})})


def _save_torchscript(path, seed):
    import json
    import warnings

    import torchvision

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    with warnings.catch_warnings():  # torch.jit's deprecation notice
        warnings.simplefilter("ignore")
        scripted = torch.jit.trace(net, torch.zeros(1, 3, 32, 32))
        torch.jit.save(scripted, str(path), _extra_files={"explainers.json": json.dumps({"input_size": [32, 32]})})


def test_an_overwritten_user_checkpoint_gives_a_fresh_map(tmp_path):
    ckpt, cache = tmp_path / "mine.safetensors", tmp_path / "cache"
    x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    _save_resnet18(ckpt, 0)
    old = cached_explain(load_classifier(str(ckpt), device="cpu", arch="resnet18"), x, "saliency", target=0, directory=cache)
    assert cached_explain(load_classifier(str(ckpt), device="cpu", arch="resnet18"), x, "saliency", target=0,
                          directory=cache).meta["cached"] is True  # same file: a hit
    _save_resnet18(ckpt, 1)
    new = _fresh(load_classifier(str(ckpt), device="cpu", arch="resnet18"), x, "saliency", cache, target=0)
    assert not np.array_equal(new.maps["saliency"], old.maps["saliency"])


def _perturbed_copy(src, dst, scale=0.05):
    tensors, card = fitted.load_fitted(src)
    g = torch.Generator().manual_seed(1)
    noisy = {k: v + scale * torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in tensors.items()}
    fitted.save_fitted(dst, noisy, card.pop("config"), **card)


def test_a_refit_in_the_users_folder_or_an_explicit_file_gives_a_fresh_map(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLAINERS_HOME", str(tmp_path / "home"))
    cache = tmp_path / "cache"
    clf = load_classifier("shapes-resnet", device="cpu")
    x = torch.rand(3, *clf.input_size, generator=torch.Generator().manual_seed(0))
    committed = fitted.committed_dir(clf.id) / "varsal.safetensors"
    old = cached_explain(clf, x, "varsal", target=0, directory=cache)
    assert cached_explain(clf, x, "varsal", target=0, directory=cache).meta["cached"] is True
    _perturbed_copy(committed, fitted.user_dir(clf.id) / "varsal.safetensors")  # `fit` writes here
    new = _fresh(clf, x, "varsal", cache, target=0)
    assert not np.array_equal(new.maps["mean"], old.maps["mean"])
    # a fit named by the config, rewritten in place
    mine = tmp_path / "elsewhere" / "enc.safetensors"
    _perturbed_copy(committed, mine, 0.02)
    _fresh(clf, x, "varsal", cache, target=0, encoder=str(mine))
    _perturbed_copy(committed, mine, 0.08)
    # (a miss is what the key can promise: VarSal itself keeps the encoder it loaded from that path)
    assert cached_explain(clf, x, "varsal", target=0, directory=cache, encoder=str(mine)).meta["cached"] is False
    # a refitted sampler (any sampler folder) misses too
    before = diskcache.entry_path(clf, x, "varsal", 0, cache)
    _perturbed_copy(fitted.committed_dir("samplers/shapes") / "gaussian.safetensors",
                    fitted.user_dir("samplers/shapes") / "gaussian.safetensors")
    assert diskcache.entry_path(clf, x, "varsal", 0, cache) != before


def test_changed_weights_of_an_embedded_classifier_give_a_fresh_map(tmp_path):
    cache = tmp_path / "cache"
    clf = load_classifier("shapes-resnet", device="cpu")
    x = torch.rand(3, *clf.input_size, generator=torch.Generator().manual_seed(0))
    old = cached_explain(clf, x, "saliency", target=1, directory=cache)
    copy = load_classifier("shapes-resnet", device="cpu")
    assert copy.weights_digest() == clf.weights_digest()
    with torch.no_grad():  # a retrained-like copy
        next(copy.net.parameters()).mul_(1.5)
    a = _fresh(copy, x, "saliency", cache, target=1)
    assert not np.array_equal(a.maps["saliency"], old.maps["saliency"])
    with torch.no_grad():  # the same object changed again in place, after its digest was taken
        list(copy.net.parameters())[-1].add_(0.5)
    _fresh(copy, x, "saliency", cache, target=1)
    assert cached_explain(clf, x, "saliency", target=1, directory=cache).meta["cached"] is True  # the original: a hit


def test_a_new_engine_misses(tmp_path, monkeypatch):
    clf, x = _clf(), torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(0))
    cached_explain(clf, x, "rise", directory=tmp_path, masks=20)
    monkeypatch.setattr(diskcache, "engine_digest", lambda: "another engine")
    assert cached_explain(clf, x, "rise", directory=tmp_path, masks=20).meta["cached"] is False


def test_the_in_memory_layer_is_keyed_like_the_disk(tmp_path, monkeypatch):
    import streamlit as st
    from PIL import Image

    import ui.cache

    monkeypatch.setenv("EXPLAINERS_HOME", str(tmp_path / "home"))
    st.cache_data.clear()
    computed = []
    real = diskcache.explain
    monkeypatch.setattr(diskcache, "explain", lambda *a, **k: computed.append(a[2]) or real(*a, **k))
    png = ui.cache.image_bytes(Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)))
    ckpt = tmp_path / "mine.pt"  # the app loads TorchScript checkpoints
    _save_torchscript(ckpt, 0)
    old = ui.cache.explanation(str(ckpt), "cpu", png, "saliency", (), 0)
    ui.cache.explanation(str(ckpt), "cpu", png, "saliency", (), 0)
    assert computed == ["saliency"]  # the second call: from memory
    _save_torchscript(ckpt, 1)  # overwritten while the app runs: reloaded, and a fresh map
    new = ui.cache.explanation(str(ckpt), "cpu", png, "saliency", (), 0)
    want = explain(load_classifier(str(ckpt), device="cpu"), ui.cache.decode_image(png), "saliency", target=0)
    assert computed == ["saliency"] * 2 and not np.array_equal(new.maps["saliency"], old.maps["saliency"])
    np.testing.assert_array_equal(new.maps["saliency"], want.maps["saliency"])
    # a refit: the memory layer misses as well
    clf = ui.cache.classifier("shapes-resnet", "cpu")
    png = ui.cache.image_bytes(Image.fromarray((np.random.default_rng(1).random((*clf.input_size, 3)) * 255).astype(np.uint8)))
    before = ui.cache.explanation("shapes-resnet", "cpu", png, "varsal", (), 0)
    ui.cache.explanation("shapes-resnet", "cpu", png, "varsal", (), 0)
    _perturbed_copy(fitted.committed_dir(clf.id) / "varsal.safetensors", fitted.user_dir(clf.id) / "varsal.safetensors")
    after = ui.cache.explanation("shapes-resnet", "cpu", png, "varsal", (), 0)
    assert computed[2:] == ["varsal"] * 2
    assert not np.array_equal(before.maps["mean"], after.maps["mean"])
    np.testing.assert_array_equal(after.maps["mean"], explain(clf, ui.cache.decode_image(png), "varsal", target=0).maps["mean"])


# -- a bounded cache, safe under concurrent writers ---------------------------------------------------
def test_the_cache_is_capped_and_the_least_recently_used_entries_go_first(tmp_path, monkeypatch):
    import os
    import time

    clf, x = _clf(), torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(0))
    path = {s: diskcache.entry_path(clf, x, "rise", 1, tmp_path, masks=20, seed=s) for s in range(3)}
    cached_explain(clf, x, "rise", target=1, directory=tmp_path, masks=20, seed=0)
    size = path[0].stat().st_size
    monkeypatch.setenv(diskcache.MAX_BYTES_ENV, str(int(size * 2.5)))
    t0 = time.time()
    os.utime(path[0], (t0 - 100, t0 - 100))
    cached_explain(clf, x, "rise", target=1, directory=tmp_path, masks=20, seed=1)
    os.utime(path[1], (t0 - 50, t0 - 50))
    assert path[0].exists() and path[1].exists()  # under the cap: both kept
    assert cached_explain(clf, x, "rise", target=1, directory=tmp_path, masks=20, seed=0).meta["cached"] is True  # used now
    cached_explain(clf, x, "rise", target=1, directory=tmp_path, masks=20, seed=2)  # over the cap
    assert path[0].exists() and path[2].exists() and not path[1].exists()
    info = diskcache.cache_info(tmp_path)
    assert info["entries"] == 2 and info["bytes"] <= info["max_bytes"] == int(size * 2.5)
    # a writer that died left a temporary file: removed once it is old
    stale = tmp_path / "rise" / f"x{diskcache._TMP}"
    stale.write_bytes(b"partial")
    os.utime(stale, (t0 - 7200, t0 - 7200))
    diskcache.evict(tmp_path)
    assert not stale.exists()
    assert diskcache.clear(tmp_path)[0] == 2 and diskcache.cache_info(tmp_path)["entries"] == 0
    monkeypatch.setenv(diskcache.MAX_BYTES_ENV, "0")  # 0: nothing is written
    assert cached_explain(clf, x, "rise", target=1, directory=tmp_path, masks=20, seed=0).meta["cached"] is False
    assert diskcache.cache_info(tmp_path)["entries"] == 0


_WORKER = """
import sys, time
from pathlib import Path
import torch
from torch import nn
from explainers import diskcache
from explainers.classifiers.base import Classifier
from explainers.core import explain

directory, me = Path(sys.argv[1]), int(sys.argv[2])
with torch.random.fork_rng():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
clf = Classifier("tiny-cache", net, ["a", "b", "c"], (12, 12))
x = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(0))
keys = [dict(masks=30, seed=s) for s in (0, 1, 2, 100 + me)]  # three shared keys and one of its own
paths = [diskcache.entry_path(clf, x, "rise", 1, directory, **k) for k in keys]
results = [explain(clf, x, "rise", target=1, **k) for k in keys[:3]]
(directory / f"ready.{me}").touch()
while not (directory / "go").exists():
    time.sleep(0.01)
for k in keys:
    diskcache.cached_explain(clf, x, "rise", target=1, directory=directory, **k)
bad = 0
for _ in range(30):  # rewrite the shared entries over and over while the others read them
    for i in range(3):
        diskcache._save(paths[i], results[i])
        bad += sum(p.exists() and diskcache._load(p) is None for p in paths[:3])
print(bad)
"""


def test_concurrent_writers_never_leave_a_corrupt_entry(tmp_path):
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    n = 4
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path), str(i)], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(n)]
    deadline = time.time() + 120
    while not all((tmp_path / f"ready.{i}").exists() for i in range(n)) and time.time() < deadline:
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.05)
    (tmp_path / "go").touch()  # all at once
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert out.strip() == "0", "a reader saw a partial entry"
    clf, x = _clf(), torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(0))
    seeds = [0, 1, 2, *(100 + i for i in range(n))]
    assert sorted(p.name for p in (tmp_path / "rise").iterdir()) == sorted(
        diskcache.entry_path(clf, x, "rise", 1, tmp_path, masks=30, seed=s).name for s in seeds)  # no temporary files left
    for s in seeds:
        hit = cached_explain(clf, x, "rise", target=1, directory=tmp_path, masks=30, seed=s)
        assert hit.meta["cached"] is True
        np.testing.assert_allclose(hit.maps["rise"], explain(clf, x, "rise", target=1, masks=30, seed=s).maps["rise"], rtol=1e-6, atol=1e-7)
