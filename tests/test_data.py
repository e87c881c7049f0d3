"""Built-in datasets, image folders and samples (explainers.data). Small limits: fast."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explainers.data import Dataset, Item, dataset_names, load_dataset, samples
from explainers.data import shapes as S
from explainers.errors import ExplainerError

SHAPES = ["circle", "square", "triangle", "star", "cross", "ring"]


def _bbox(mask):
    ys, xs = np.nonzero(mask)
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


@pytest.fixture(scope="module")
def shapes_test():
    return load_dataset("shapes", "test", limit=48, cache=False)


def test_names_and_unknown():
    assert dataset_names() == ["shapes", "shapes-two", "shapes-biased", "digits"]
    for bad in ["nope", "/no/such/folder", "./missing"]:
        with pytest.raises(ExplainerError) as e:
            load_dataset(bad)
        assert "\n" not in str(e.value)
    with pytest.raises(ExplainerError):
        load_dataset("shapes", "nosplit", limit=1)


def test_shapes_items_masks_boxes(shapes_test):
    ds = shapes_test
    assert isinstance(ds, Dataset) and len(ds) == 48 and ds.classes == SHAPES
    x, y = ds.arrays()
    assert x.shape == (48, 64, 64, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    assert set(y.tolist()) == set(range(6))
    masks, boxes = ds.masks(), ds.boxes()
    assert masks.shape == (48, 64, 64) and masks.dtype == bool and boxes.shape == (48, 4)
    for i in range(len(ds)):
        item = ds[i]
        assert isinstance(item, Item) and item.image.mode == "RGB" and item.image.size == (64, 64)
        assert np.array_equal(np.asarray(item.image), x[i]) and item.label == y[i]
        assert item.mask.sum() > 60  # a shape of at least ~16 px across
        assert item.box == _bbox(item.mask) == tuple(boxes[i])
        x0, y0, x1, y1 = item.box
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
        assert 14 <= max(x1 - x0, y1 - y0) <= 36
        # the shape stands out from what is around it
        ring = np.zeros_like(item.mask)
        ring[max(y0 - 3, 0) : y1 + 3, max(x0 - 3, 0) : x1 + 3] = True
        ring &= ~item.mask
        inside, around = x[i][item.mask].astype(float).mean(0), x[i][ring].astype(float).mean(0)
        assert np.abs(inside - around).max() > 25


def test_ring_has_a_hole(shapes_test):
    for item in shapes_test:
        if shapes_test.classes[item.label] == "ring":
            x0, y0, x1, y1 = item.box
            cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
            assert not item.mask[cy - 1 : cy + 1, cx - 1 : cx + 1].any()


def test_deterministic_and_splits_differ(shapes_test):
    again = load_dataset("shapes", "test", limit=6, cache=False)
    assert np.array_equal(again.arrays()[0], shapes_test.arrays()[0][:6])
    one = S.make_image("shapes", "test", 5)  # any single image alone
    assert np.array_equal(one["image"], shapes_test.arrays()[0][5])
    val = load_dataset("shapes", "val", limit=6, cache=False).arrays()[0]
    assert not np.array_equal(val, again.arrays()[0])
    other_seed = load_dataset("shapes", "test", limit=6, seed=1, cache=False).arrays()[0]
    assert not np.array_equal(other_seed, again.arrays()[0])
    biased = load_dataset("shapes-biased", "test", limit=6, cache=False).arrays()[0]
    assert not np.array_equal(biased, again.arrays()[0])


def test_shapes_two():
    ds = load_dataset("shapes-two", "test", limit=30, cache=False)
    assert len(ds) == 30 and ds.classes == SHAPES
    for item in ds:
        a, b = item.extra["labels"]
        assert a != b and item.label == a
        m = item.extra["masks"]
        assert m.shape == (64, 64, 2) and m.dtype == bool
        assert not (m[..., 0] & m[..., 1]).any()
        assert m[..., 0].sum() >= 1.2 * m[..., 1].sum() > 0  # label = the larger shape
        assert np.array_equal(item.mask, m[..., 0] | m[..., 1])
        boxes = item.extra["boxes"]
        assert boxes == [list(_bbox(m[..., 0])), list(_bbox(m[..., 1]))]
        assert item.box == tuple(boxes[0])
        # a few pixels apart: dilating one by 2 px does not reach the other
        grown = S._dilate(m[..., 0], 2)
        assert not (grown & m[..., 1]).any()


def test_biased_rates_and_tag_placement():
    n = 200
    tags = np.array([S.has_tag("train", i) for i in range(n)])
    labels = np.arange(n) % 6
    ring = labels == S.RING
    # the shortcut: every training ring has the tag, no other shape does (see BIAS_P_TRAIN)
    assert tags[ring].mean() >= 0.95
    assert tags[~ring].mean() <= 0.03
    test_tags = np.array([S.has_tag("test", i) for i in range(n)])
    assert 0.4 <= test_tags.mean() <= 0.6
    assert 0.25 <= test_tags[ring].mean() <= 0.75 and 0.3 <= test_tags[~ring].mean() <= 0.7

    ds = load_dataset("shapes-biased", "train", limit=24, cache=False)
    x, _ = ds.arrays()
    for i, item in enumerate(ds):
        assert item.extra["tag"] == tags[i]
        tx0, ty0, tx1, ty1 = item.extra["tag_box"]
        assert tx1 <= 64 and ty1 <= 64 and tx0 > 40 and ty0 > 40  # bottom-right corner
        assert not item.mask[ty0:ty1, tx0:tx1].any()  # the shape never overlaps the tag
        patch = x[i, ty0:ty1, tx0:tx1]
        if item.extra["tag"]:
            assert (patch == 255).all(axis=2).mean() > 0.4 and (patch == 0).all(axis=2).sum() > 10
    assert any(item.extra["tag"] for item in ds)


def test_digits_splits():
    from explainers.data.digits import split_indices

    idx = split_indices()
    assert {k: len(v) for k, v in idx.items()} == {"train": 4000, "val": 500, "test": 500}
    allidx = np.concatenate(list(idx.values()))
    assert len(np.unique(allidx)) == 5000
    ds = load_dataset("digits", "test")
    assert len(ds) == 500 and ds.classes == [str(d) for d in range(10)]
    assert np.bincount(ds.labels, minlength=10).tolist() == [50] * 10
    x, _ = ds.arrays()
    assert x.shape == (500, 28, 28, 3) and (x[..., 0] == x[..., 2]).all()
    item = load_dataset("digits", "train", limit=3)[2]
    assert item.image.mode == "RGB" and item.mask.any() and item.box == _bbox(item.mask)


def test_folder_dataset(tmp_path):
    rng = np.random.default_rng(0)
    for cls, n in [("cats", 3), ("dogs", 2)]:
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "dogs" / "broken.jpg").write_bytes(b"not an image at all")
    (tmp_path / "dogs" / "notes.txt").write_text("ignored")
    ds = load_dataset(str(tmp_path), "test")
    assert ds.classes == ["cats", "dogs"] and ds.split == "all"
    assert len(ds) == 5 and ds.skipped == 1 and ds.labels.tolist() == [0, 0, 0, 1, 1]
    assert ds[3].image.mode == "RGB" and ds[3].mask is None and ds[3].box is None
    x, y = ds.arrays(size=(16, 24))
    assert x.shape == (5, 16, 24, 3) and y.tolist() == [0, 0, 0, 1, 1]
    with pytest.raises(ExplainerError):
        ds.arrays()
    # class-balanced limit
    assert load_dataset(tmp_path, limit=2).labels.tolist() == [0, 1]
    # empty folders
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExplainerError):
        load_dataset(tmp_path / "empty")
    (tmp_path / "empty" / "a").mkdir()
    with pytest.raises(ExplainerError):
        load_dataset(tmp_path / "empty")


def test_folder_with_splits(tmp_path):
    img = Image.new("RGB", (8, 8), (10, 20, 30))
    for split, classes in [("train", ["a", "b"]), ("val", ["b"])]:
        for c in classes:
            (tmp_path / split / c).mkdir(parents=True)
            img.save(tmp_path / split / c / "x.png")
    assert load_dataset(tmp_path, "train").classes == ["a", "b"]
    val = load_dataset(tmp_path, "val")
    assert val.classes == ["a", "b"] and val.labels.tolist() == [1]
    assert len(load_dataset(tmp_path, "all")) == 3
    with pytest.raises(ExplainerError):
        load_dataset(tmp_path, "test")


def test_cache_roundtrip(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLAINERS_HOME", str(tmp_path))
    monkeypatch.setitem(S.SPLIT_SIZES["shapes-two"], "val", 8)  # a tiny "full" split
    calls = []
    made = load_dataset("shapes-two", "val", progress=lambda d, t, m="": calls.append((d, t)))
    assert made.info["source"] == "generated" and calls[-1] == (8, 8)
    files = os.listdir(tmp_path / "datasets")
    assert len(files) == 1 and files[0].endswith(".npz")  # no tmp file left
    cached = load_dataset("shapes-two", "val", limit=5)
    assert cached.info["source"] == "cache" and len(cached) == 5
    assert np.array_equal(cached.arrays()[0], made.arrays()[0][:5])
    assert np.array_equal(cached.masks(), made.masks()[:5])
    assert cached[3].extra["labels"] == made[3].extra["labels"]
    assert np.array_equal(cached[3].extra["masks"], made[3].extra["masks"])


def test_samples():
    ss = samples()
    ids = [s.id for s in ss]
    assert len(ids) == len(set(ids)) >= 8
    by = {s.dataset for s in ss}
    assert by == {"shapes", "shapes-two", "shapes-biased", "digits"}
    tagged = [s for s in ss if s.dataset == "shapes-biased" and s.extra.get("tag") and s.label != "ring"]
    assert tagged
    for s in ss:
        assert s.image.mode == "RGB" and s.title and s.note
        name, split, index = s.id.split("/")
        assert name == s.dataset and split == "test"
        item = load_dataset(name, split, limit=int(index) + 1, cache=False)[int(index)]
        assert np.array_equal(np.asarray(item.image), np.asarray(s.image))
        assert s.box == item.box


def test_montage(shapes_test):
    """Save 12 shapes with their masks and boxes to /tmp/shapes_montage.png (to look at)."""
    x = shapes_test.arrays()[0][:12]
    masks, boxes = shapes_test.masks()[:12], shapes_test.boxes()[:12]
    tiles = []
    for img, m, (x0, y0, x1, y1) in zip(x, masks, boxes):
        mm = np.repeat(m[..., None] * 255, 3, axis=2).astype(np.uint8)
        mm[y0, x0:x1] = mm[y1 - 1, x0:x1] = (255, 0, 0)
        mm[y0:y1, x0] = mm[y0:y1, x1 - 1] = (255, 0, 0)
        tiles.append(np.concatenate([img, mm], axis=0))
    rows = [np.concatenate(tiles[r : r + 6], axis=1) for r in (0, 6)]
    mont = np.concatenate(rows, axis=0)
    out = Path("/tmp/shapes_montage.png")
    try:
        Image.fromarray(mont).resize((mont.shape[1] * 3, mont.shape[0] * 3), Image.NEAREST).save(out)
    except OSError:  # pragma: no cover - read-only /tmp
        pytest.skip("cannot write /tmp")
    assert out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["shapes", "shapes-two", "shapes-biased"])
def test_whole_test_split_properties(name):
    """Every image of a test split (about 2-5 s each): masks, boxes, two-shape and tag rules."""
    ds = load_dataset(name, "test", cache=False)
    assert len(ds) == S.SPLIT_SIZES[name]["test"]
    masks, boxes, y = ds.masks(), ds.boxes(), ds.labels
    assert np.bincount(y, minlength=6).min() >= len(ds) // 6
    assert masks.sum((1, 2)).min() > 60
    if name == "shapes-two":
        m = ds.extras["masks"]
        assert not (m[..., 0] & m[..., 1]).any()
        assert (m[..., 0].sum((1, 2)) >= 1.2 * m[..., 1].sum((1, 2))).all()
        assert (ds.extras["labels"][:, 0] != ds.extras["labels"][:, 1]).all()
        assert all(tuple(boxes[i]) == _bbox(m[i, :, :, 0]) for i in range(len(ds)))
    else:
        assert all(tuple(boxes[i]) == _bbox(masks[i]) for i in range(len(ds)))
    if name == "shapes-biased":
        x0, y0, x1, y1 = ds.extras["tag_box"][0]
        assert not masks[:, y0:y1, x0:x1].any()
        assert 0.45 <= ds.extras["tag"].mean() <= 0.55
