"""AppTest of the VarSal page: mean and std side by side, samples, the prior picture, the sliders."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")


@pytest.fixture
def at(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLAINERS_HOME", str(tmp_path))  # a fresh result cache: the engine really runs
    return AppTest.from_file(APP, default_timeout=180)


def _ready():
    from explainers.classifiers.embedded import EMBEDDED

    if not EMBEDDED["shapes-resnet"].weights.exists():
        pytest.skip("shapes-resnet weights not trained yet")
    if not (ROOT / "assets/explainers/shapes-resnet/varsal.safetensors").exists():
        pytest.skip("no committed VarSal encoder for shapes-resnet")


def _charts(at) -> int:
    return len(at.get("plotly_chart"))


def test_varsal_page_amortised_maps_samples_and_prior(at):
    at.run()
    at.switch_page("pages/varsal.py").run()
    assert not at.exception
    _ready()
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value.startswith("VarSal")
    assert at.success and "Amortised" in at.success[0].value
    assert _charts(at) == 2 + 4 + 1  # mean, std, 4 posterior samples, the prior picture


def test_varsal_page_alpha_slider_switches_to_per_image_and_says_so(at):
    at.run()
    at.switch_page("pages/varsal.py").run()
    _ready()
    at.slider(key="varsal.alpha").set_value(0.2).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.info and "Per-image" in at.info[0].value and "alpha" in at.info[0].value
    assert _charts(at) == 7


def test_varsal_page_baseline_choice_switches_to_per_image(at):
    at.run()
    at.switch_page("pages/varsal.py").run()
    _ready()
    at.selectbox(key="varsal.baseline").set_value("blur").run()
    assert not at.exception and not at.error
    assert at.info and "baseline" in at.info[0].value
