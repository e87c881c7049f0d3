"""AppTest of the app shell: sidebar, home page, unavailable models.

AppTest drops the sidebar's elements from its tree on a rerun when the app uses ``st.navigation``
(the real app is fine), so sidebar choices are set through session state before a first run.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture
def at():
    return AppTest.from_file(APP, default_timeout=120)


def fresh(**state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for k, v in state.items():
        at.session_state[k] = v
    return at.run()


def test_home_shows_prediction_for_the_default(at):
    at.run()
    assert not at.exception
    assert at.sidebar.selectbox(key="model_id").value == "shapes-resnet"
    assert at.title[0].value == "Image & prediction"
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    assert "shapes-resnet" in at.caption[0].value


def test_every_sample_predicts_without_error(at):
    at.run()
    n = len(at.sidebar.selectbox(key="sample").options)
    assert n >= 4
    for k in range(n):
        at = fresh(sample=k)
        assert not at.exception
        assert not at.error, [e.value for e in at.error]
        assert len(at.get("plotly_chart")) == 1


def test_unavailable_model_shows_reason_not_traceback(at, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("EXPLAINERS_OFFLINE", "1")
    at = fresh(model_id="tv-resnet50")
    assert not at.exception
    assert at.sidebar.warning and "hub cache" in at.sidebar.warning[0].value
    assert at.info  # the page says why it cannot run instead of failing


def test_digit_classifier_on_a_digit_sample(at):
    at.run()
    opts = at.sidebar.selectbox(key="sample").options
    digit = [k for k, o in enumerate(opts) if "digit" in o.lower()]
    assert digit
    at = fresh(model_id="digits-cnn", sample=digit[0])
    assert not at.exception and len(at.get("plotly_chart")) == 1
    assert "digits-cnn" in at.caption[0].value
