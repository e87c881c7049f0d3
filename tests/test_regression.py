"""Every method's maps on a fixed set of images and seeds equal the recorded ones, bit for bit.

The record is ``tests/fixtures/regression_maps.npz``, written by ``scripts/regression_maps.py``.
A change meant to alter maps rewrites it with that command and says so in its commit; any other
change (a refactoring) must leave this test green.
"""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_maps_are_bit_identical_to_the_record():
    # A subprocess: one thread there (one reduction order) without touching this process's torch.
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "regression_maps.py"), "--check"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_the_check_detects_a_changed_map(monkeypatch, script):
    mod = script("regression_maps")
    import numpy as np

    with np.load(mod.FIXTURE) as z:
        maps = {k: z[k].copy() for k in z.files}
    assert mod.differences(maps) == []
    k = sorted(maps)[0]
    maps[k] = maps[k] + np.float32(1e-7) * (maps[k] != 0) + np.float32(1e-30)
    assert mod.differences(maps) == [next(l for l in mod.differences(maps))]
    del maps[k]
    assert any("missing" in l for l in mod.differences(maps))
