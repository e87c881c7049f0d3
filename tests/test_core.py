"""The method registry, config validation, explain() plumbing and the .npz export."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image

from explainers.core import METHODS, Explanation, MethodOutput, MethodSpec, explain, make_config, register
from explainers.errors import ExplainerError


@dataclass(frozen=True)
class _Cfg:
    scale: float = 1.0
    steps: int = 3
    flag: bool = False
    name: str = "x"

    def __post_init__(self):
        if self.steps < 1:
            raise ExplainerError("steps must be at least 1")


def _run(clf, x01, target, cfg, progress):
    # the map is the target's input gradient sign times scale: enough to check the plumbing
    return MethodOutput({"m": np.full(clf.input_size, cfg.scale * (target + 1), np.float32)}, meta={"extra": 1})


@pytest.fixture
def fake_method():
    spec = register(MethodSpec("_fake", "Fake", _Cfg, _run, {"m": "signed"}, {"m": "units"}))
    yield spec
    METHODS.pop("_fake")


@pytest.fixture
def tiny_clf(tiny_cnn):
    return tiny_cnn(8)


def test_make_config_coerces_cli_strings(fake_method):
    cfg = make_config("_fake", scale="2.5", steps="4", flag="true", name="y")
    assert cfg == _Cfg(2.5, 4, True, "y")


@pytest.mark.parametrize(
    "params, words",
    [({"bogus": 1}, "unknown parameter"), ({"steps": "x"}, "cannot read"), ({"steps": 0}, "at least 1"), ({"flag": "maybe"}, "cannot read")],
)
def test_make_config_rejects_bad_values_in_one_line(fake_method, params, words):
    with pytest.raises(ExplainerError) as e:
        make_config("_fake", **params)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_unknown_method_is_a_one_line_error():
    with pytest.raises(ExplainerError, match="unknown method"):
        make_config("no-such-method")


def test_explain_resolves_target_and_records_meta(fake_method, tiny_clf, tmp_path):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    r = explain(tiny_clf, img, "_fake", target="c", scale=2)
    assert r.meta["target"] == 2 and r.meta["target_label"] == "c"
    assert r.maps["m"].shape == (8, 8) and r.maps["m"].dtype == np.float32
    np.testing.assert_allclose(r.maps["m"], 6.0)
    assert r.meta["params"]["scale"] == 2 and r.meta["extra"] == 1
    top1 = explain(tiny_clf, img, "_fake")
    assert top1.meta["target"] == top1.meta["top5"][0][0]
    with pytest.raises(ExplainerError, match="out of range"):
        explain(tiny_clf, img, "_fake", target=7)
    with pytest.raises(ExplainerError, match="unknown class"):
        explain(tiny_clf, img, "_fake", target="zebra")
    # export round trip keeps every map and the settings
    out = r.save(tmp_path / "maps.npz")
    back = Explanation.load(out)
    np.testing.assert_array_equal(back.maps["m"], r.maps["m"])
    assert back.meta["params"] == r.meta["params"] and back.meta["model"] == "tiny"


def test_classifier_is_frozen_and_in_eval(tiny_clf):
    assert not tiny_clf.net.training
    assert all(not p.requires_grad for p in tiny_clf.net.parameters())
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    tiny_clf.logits01(x)[0, 0].backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_make_config_coerces_optional_fields_from_cli_strings():
    """``--set k1=3`` on an ``Optional[int]`` field gives the int 3, ``none`` gives None."""
    cfg = make_config("dssr", k1="3", lam="0.001", init="none")
    assert cfg.k1 == 3 and isinstance(cfg.k1, int)
    assert cfg.lam == 0.001 and isinstance(cfg.lam, float)
    assert cfg.init is None
    with pytest.raises(ExplainerError, match="cannot read"):
        make_config("dssr", k1="three")
