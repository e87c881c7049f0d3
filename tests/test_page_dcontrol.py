"""AppTest of the distribution-controller page."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")


@pytest.fixture
def at(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("EXPLAINERS_HOME", str(tmp_path))  # a fresh result cache: the engine really runs
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the app runs in this process; one thread on the shared 2-core machine
    yield AppTest.from_file(APP, default_timeout=120)
    torch.set_num_threads(n)


def _ready():
    from explainers.classifiers.embedded import EMBEDDED

    if not EMBEDDED["shapes-resnet"].weights.exists():
        pytest.skip("shapes-resnet weights not trained yet")
    if not (ROOT / "assets/explainers/shapes-resnet/dcontrol-customised.safetensors").exists():
        pytest.skip("no committed dcontrol fit for shapes-resnet")


def _slider(at, prefix):
    return next(s for s in at.slider if s.key.startswith(prefix))


def test_dcontrol_page_masks_sliders_and_density(at):
    at.run()
    at.switch_page("pages/dcontrol.py").run()
    assert not at.exception
    _ready()
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Distribution controller"
    assert len(at.get("plotly_chart")) == 4  # raw, fine-tuned, Eq. 7 vs histogram, fine-tuning curve
    assert any("fitted generator" in c.value and "η = 1.5" in c.value for c in at.caption)
    # η and h re-applied live to the stored z
    _slider(at, "dc.eta").set_value(3.0).run()
    _slider(at, "dc.h").set_value(1.0).run()
    assert not at.exception and not at.error
    assert any("re-applied to the stored z" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 4
    # the basic transformer's fit
    at.radio(key="dc.transformer").set_value("basic").run()
    assert not at.exception and not at.error
    assert _slider(at, "dc.eta").disabled
    assert len(at.get("plotly_chart")) == 4


def test_dcontrol_page_per_image_optimisation(at):
    at.run()
    at.switch_page("pages/dcontrol.py").run()
    _ready()
    at.selectbox(key="dc.generator").set_value("optimise").run()
    assert not at.exception and not at.error
    assert any("per-image optimisation" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 4
