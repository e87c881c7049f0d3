"""scripts/mipin_offline_crops.py: the held-out fit folder for MIP-IN on an ImageNet network holds
none of the real-network table's photographs, is the same on every run, and keeps its val
photographs out of the train split."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def crops(script):
    return script("mipin_offline_crops")


def _thumb(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB").resize((32, 32), Image.BILINEAR), dtype=np.float64)


def test_no_source_is_an_evaluation_photograph(crops, script):
    table = script("imagenet_table")
    srcs = crops.sources()
    assert len(srcs) >= 10
    for p in table.PHOTOS:
        ev = table.load_photo(p)
        for name, im in srcs.items():
            # by content, not by name: the same scene at the same size would be nearly identical
            same = im.size == ev.size and np.abs(_thumb(im) - _thumb(ev)).mean() < 10
            assert not same, f"{name} is the evaluation photograph {p}"


def test_crops_are_seeded_and_224(crops):
    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    a = crops.crop(im, np.random.default_rng([0, 1, 2]))
    b = crops.crop(im, np.random.default_rng([0, 1, 2]))
    c = crops.crop(im, np.random.default_rng([0, 1, 3]))
    assert a.size == (224, 224)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_folder_layout_and_disjoint_splits(crops, tmp_path):
    from explainers.data import load_dataset

    assert crops.main(["--out", str(tmp_path), "--per-photo", "1", "--val-per-photo", "2"]) == 0
    train = {d.name for d in (tmp_path / "train").iterdir()}
    val = {d.name for d in (tmp_path / "val").iterdir()}
    assert val == set(crops.VAL) and not (train & val)
    assert len(load_dataset(str(tmp_path), "val")) == 2 * len(crops.VAL)
    first = np.asarray(Image.open(next((tmp_path / "val" / crops.VAL[0]).iterdir())))
    assert first.shape == (224, 224, 3)
