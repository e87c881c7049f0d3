"""ImageNet's validation layout (explainers.data.imagenet_val) on tiny folders made here."""
import json

import numpy as np
import pytest
from PIL import Image
from torch import nn

from explainers.classifiers.base import Classifier
from explainers.data import load_dataset
from explainers.data import imagenet_val as iv
from explainers.data.imagenet_val import ImageNetValDataset
from explainers.errors import ExplainerError
from explainers.evaluation import object_mask

WNIDS = sorted(f"n{7 * i + 1000000:08d}" for i in range(1000))  # 1000 made-up ids; their sorted order is the index
# image id -> (width, height, [(wnid, (xmin, ymin, xmax, ymax) inclusive)])
IMAGES = {
    "ILSVRC2012_val_00000001": (400, 200, [(WNIDS[3], (125, 25, 249, 149)), (WNIDS[3], (300, 150, 339, 189)),
                                           (WNIDS[8], (0, 0, 9, 9))]),
    "ILSVRC2012_val_00000002": (150, 300, [(WNIDS[999], (10, 20, 99, 199))]),
    "ILSVRC2012_val_00000003": (200, 200, [(WNIDS[500], (0, 0, 199, 199))]),
}


def _csv(anns) -> str:
    rows = ["ImageId,PredictionString"]
    rows += [f"{k}," + " ".join(f"{w} {' '.join(map(str, b))}" for w, b in a) + " " for k, (_, _, a) in anns.items()]
    return "\n".join(rows) + "\n"


def _xml(key, w, h, anns) -> str:
    objs = "".join(f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
                   f"<ymax>{b[3]}</ymax></bndbox></object>" for n, b in anns)
    return f"<annotation><filename>{key}</filename><size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objs}</annotation>"


def make_folder(root, layout="csv", images=IMAGES, mapping=True):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for key, (w, h, _) in images.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"{key}.JPEG")
    if layout == "csv":
        (root / "LOC_val_solution.csv").write_text(_csv(images))
    else:
        (root / "Annotations").mkdir()
        for key, (w, h, a) in images.items():
            (root / "Annotations" / f"{key}.xml").write_text(_xml(key, w, h, a))
    if mapping:
        (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} class {i}, a name\n" for i, w in enumerate(reversed(WNIDS))))
    return root


def _boxmask(h, w, box):
    m = np.zeros((h, w), bool)
    m[box[1]:box[3], box[0]:box[2]] = True
    return m


@pytest.mark.parametrize("layout", ["csv", "xml"])
def test_reads_labels_boxes_and_masks(tmp_path, layout):
    ds = load_dataset(make_folder(tmp_path / "val", layout), "test")
    assert isinstance(ds, ImageNetValDataset) and ds.split == "val" and len(ds) == 3
    assert ds.labels.tolist() == [3, 999, 500]  # index = position in the sorted ids, not in the mapping file's order
    from torchvision.models import ResNet50_Weights

    assert ds.classes == list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    it = ds[0]
    assert it.image.size == (400, 200) and it.extra["wnid"] == WNIDS[3]
    assert it.box == (125, 25, 250, 150)  # the larger of the two boxes of its class, xmax/ymax made exclusive
    assert it.extra["boxes"] == [[125, 25, 250, 150], [300, 150, 340, 190]]
    want = _boxmask(200, 400, (125, 25, 250, 150)) | _boxmask(200, 400, (300, 150, 340, 190))
    assert np.array_equal(it.mask, want)  # the other class's box (0, 0, 10, 10) is left out
    assert ds[2].mask.all() and ds[1].box == (10, 20, 100, 200)
    assert len(load_dataset(tmp_path / "val", limit=2)) == 2 and load_dataset(tmp_path / "val", limit=2).paths == ds.paths[:2]


def test_both_layouts_agree(tmp_path):
    a = load_dataset(make_folder(tmp_path / "a", "csv"))
    b = load_dataset(make_folder(tmp_path / "b", "xml"))
    assert a.labels.tolist() == b.labels.tolist()
    for x, y in zip(a, b):
        assert x.box == y.box and np.array_equal(x.mask, y.mask)


def test_box_follows_resize_and_centre_crop(tmp_path):
    """torchvision's recipe (shorter side to 256, centre crop 224) by hand. Landscape 400x200:
    x1.28 to 512x256, crop from (144, 16); box (125, 25, 250, 150) -> (160, 32, 320, 192) ->
    (16, 16, 176, 176); its other box (300, 150, 340, 190) -> x from 240, outside the crop.
    Portrait 150x300: x256/150 to 256x512, crop from (16, 144); box (10, 20, 100, 200) ->
    (1.07, -109.9, 154.7, 197.3): a pixel is in when its centre is inside."""
    ds = load_dataset(make_folder(tmp_path / "val", "csv"))
    clf = Classifier("t", nn.Conv2d(3, 2, 1), ["a", "b"], (224, 224), resize=256)
    it = ds[0]
    got = object_mask(clf, it.image, it.mask, it.box)
    assert got.shape == (224, 224) and np.array_equal(got, _boxmask(224, 224, (16, 16, 176, 176)))
    it = ds[1]
    s = 256 / 150
    x0, y0, x1, y1 = 10 * s - 16, 20 * s - 144, 100 * s - 16, 200 * s - 144
    c = np.arange(224) + 0.5
    hand = (c[:, None] > y0) & (c[:, None] < y1) & (c[None, :] > x0) & (c[None, :] < x1)
    assert np.array_equal(object_mask(clf, it.image, it.mask, it.box), hand)


def test_evaluate_cli_scores_boxes(tmp_path, capsys):
    from explainers.__main__ import main

    root = make_folder(tmp_path / "val", "xml")
    out = tmp_path / "rows.jsonl"
    code = main(["evaluate", "--model", "shapes-resnet", "--method", "gradcam", "--data", str(root),
                 "--metric", "pointing,bbox-accuracy", "--out", str(out), "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["n"] == 3 and res["metrics"]["pointing"]["n"] == 3 and res["metrics"]["bbox-accuracy"]["n"] == 3
    # the third image's box is the whole image: every pixel is inside, so both metrics are 1
    rows = [json.loads(line) for line in out.read_text().splitlines()[1:]]
    third = next(r for r in rows if r["index"] == 2)
    assert third["pointing"] == 1.0 and third["bbox-accuracy"] == 1.0


def _err(path) -> str:
    with pytest.raises(ExplainerError) as e:
        ds = load_dataset(path)
        for _ in ds:
            pass
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_one_line_errors(tmp_path, monkeypatch):
    extra = dict(IMAGES, ILSVRC2012_val_00000009=(50, 50, [(WNIDS[1], (0, 0, 9, 9))]))
    # an image without a label
    root = make_folder(tmp_path / "a", "csv")
    Image.new("RGB", (20, 20)).save(root / "ILSVRC2012_val_00000004.JPEG")
    assert "ILSVRC2012_val_00000004.JPEG has no label" in _err(root)
    # a label for an image that is not there (xml and csv)
    root = make_folder(tmp_path / "b", "xml", images=extra)
    (root / "ILSVRC2012_val_00000009.JPEG").unlink()
    assert "ILSVRC2012_val_00000009" in _err(root) and "without an image" in _err(root)
    root = make_folder(tmp_path / "b2", "csv", images=extra)
    (root / "ILSVRC2012_val_00000009.JPEG").unlink()
    assert "ILSVRC2012_val_00000009" in _err(root)
    monkeypatch.setattr(iv, "FULL_VAL", 4)  # the official full set may label images the folder lacks
    assert len(load_dataset(root)) == 3
    monkeypatch.undo()
    # an id outside the 1000
    bad = dict(IMAGES, ILSVRC2012_val_00000002=(150, 300, [("n99999999", (1, 1, 5, 5))]))
    assert "'n99999999' is not one of the 1000" in _err(make_folder(tmp_path / "c", "csv", images=bad))
    # malformed xml and csv
    root = make_folder(tmp_path / "d", "xml")
    (root / "Annotations" / "ILSVRC2012_val_00000002.xml").write_text("<annotation><object>")
    assert "ILSVRC2012_val_00000002.xml: not a readable xml" in _err(root)
    root = make_folder(tmp_path / "d2", "xml")
    (root / "Annotations" / "ILSVRC2012_val_00000002.xml").write_text(
        "<annotation><object><name>n01000000</name><bndbox><xmin>1</xmin></bndbox></object></annotation>")
    assert "lacks <name> or a full <bndbox>" in _err(root)
    root = make_folder(tmp_path / "e", "csv")
    text = (root / "LOC_val_solution.csv").read_text().splitlines()
    (root / "LOC_val_solution.csv").write_text("\n".join(text[:2] + [text[2].replace(" 99 ", " ")] + text[3:]))
    assert "line 3: the prediction string" in _err(root)
    (root / "LOC_val_solution.csv").write_text("\n".join(text[:2] + [text[2].replace(" 99 ", " x9 ")] + text[3:]))
    assert "line 3: box" in _err(root)
    (root / "LOC_val_solution.csv").write_text("id,boxes\n" + "\n".join(text[1:]))
    assert "line 1: expected the header" in _err(root)
    # a box outside its image, an xml size that is not the image's
    off = dict(IMAGES, ILSVRC2012_val_00000003=(200, 200, [(WNIDS[500], (0, 0, 250, 100))]))
    assert "lies outside the 200x200 image" in _err(make_folder(tmp_path / "f", "csv", images=off))
    root = make_folder(tmp_path / "g", "xml")
    Image.new("RGB", (210, 200)).save(root / "ILSVRC2012_val_00000003.JPEG")
    assert "its xml gives the size 200x200, the image is 210x200" in _err(root)
    # no id list and fewer than 1000 classes in the annotations
    assert "LOC_synset_mapping.txt" in _err(make_folder(tmp_path / "h", "csv", mapping=False))


def test_wnids_from_annotations_when_all_1000_present(tmp_path, monkeypatch):
    monkeypatch.setattr(iv, "NUM_CLASSES", 4)
    ids = [WNIDS[3], WNIDS[8], WNIDS[999], WNIDS[500]]  # the annotations name four classes = "all" here
    ds = load_dataset(make_folder(tmp_path / "v", "xml", mapping=False))
    assert sorted(set(ids)) == ds.wnids and ds.labels.tolist() == [0, 3, 2]
