"""AppTest of the MIP-IN page: maps, source signal, λ slider, layer-by-layer signals, no traceback."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture
def at(tmp_path, monkeypatch):
    import streamlit as st

    monkeypatch.setenv("EXPLAINERS_HOME", str(tmp_path))  # a fresh disk cache, no user fits
    st.cache_data.clear()  # results cached in memory by another test of this process
    return AppTest.from_file(APP, default_timeout=120)


def _fitted(model_id: str) -> bool:
    root = Path(__file__).resolve().parents[1] / "assets"
    return (root / "classifiers" / f"{model_id}.safetensors").exists() and (root / "explainers" / model_id / "mipin.safetensors").exists()


def test_page_shows_attribution_source_and_layers(at):
    if not _fitted("shapes-resnet"):
        pytest.skip("the default classifier or its MIP-IN fit is not committed yet")
    at.run()
    at.switch_page("pages/mipin.py").run()
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value.startswith("MIP-IN")
    charts = at.get("plotly_chart")
    # attribution twice, S0 (a feature map for the ResNet), the logits, and one per inverted layer
    assert len(charts) >= 5
    assert any("logit" in c.value for c in at.caption)
    # the λ slider re-solves from the stored statistics
    at.select_slider(key="mipin.lam").set_value(0.1).run()
    assert not at.exception and not at.error
    assert any("re-solved" in c.value for c in at.caption)
    at.checkbox(key="mipin.frelu").uncheck().run()
    assert not at.exception and not at.error


def test_page_on_a_whole_network(at):
    if not _fitted("digits-cnn"):
        pytest.skip("digits-cnn or its MIP-IN fit is not committed yet")
    at.run()
    at.sidebar.selectbox(key="model_id").set_value("digits-cnn").run()
    at.switch_page("pages/mipin.py").run()
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    assert len(at.get("imgs")) >= 1 or len(at.get("image")) >= 1


def test_page_without_a_fit_shows_the_command_not_a_traceback(at, monkeypatch):
    from explainers.methods import mipin

    monkeypatch.setattr(mipin, "fitted_paths", lambda clf: [])
    at.run()
    at.switch_page("pages/mipin.py").run()
    assert not at.exception
    assert at.error and "python -m explainers fit --explainer mipin" in at.error[0].value
