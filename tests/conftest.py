"""Shared test fixtures.

Sections (keep each helper in its own section):
- tiny classifiers: small networks built in memory for the engine's tests;
- app pages: AppTest helpers for the pages' tests.
"""
from __future__ import annotations

# --- tiny classifiers --------------------------------------------------------------------------
# Small convolutional classifiers built in memory for the engine's tests (no weights on disk).

import pytest


def build_tiny_cnn(side: int = 12, classes: int = 3, widths: tuple[int, ...] = (4,), pool: int = 1, *, seed: int = 0,
                   scale: float | None = None, nested: bool = False, name: str = "tiny", **classifier):
    """A :class:`~explainers.classifiers.base.Classifier` of ``side``×``side`` inputs: 3×3 convolutions
    (padding 1) with ``widths`` channels, each followed by a ReLU, an adaptive average pool to
    ``pool``×``pool`` and a linear layer to ``classes`` logits. ``classifier``: the Classifier's other
    fields (``mean``, ``std``, ``dataset``, ...).

    Weights: PyTorch's default initialisation under ``torch.manual_seed(seed)`` (the global random
    state is restored afterwards), or, with ``scale``, N(0, scale²) from a generator seeded with
    ``seed``. ``nested``: ``nn.Sequential(features, head)`` like the embedded models (Grad-CAM reads
    ``net[0]``); the same weights as the flat net."""
    import torch
    from torch import nn

    from explainers.classifiers.base import Classifier

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        convs, c = [], 3
        for w in widths:
            convs += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU()]
            c = w
        head = [nn.AdaptiveAvgPool2d(pool), nn.Flatten(), nn.Linear(c * pool * pool, classes)]
        net = nn.Sequential(nn.Sequential(*convs), nn.Sequential(*head)) if nested else nn.Sequential(*convs, *head)
    if scale is not None:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    return Classifier(name, net, [chr(ord("a") + i) for i in range(classes)], (side, side), **classifier)


@pytest.fixture()
def one_thread():
    """One torch thread for the test (small fits: as fast, and the CPU is shared); restored afterwards.
    Modules of tiny tensors define their own module-wide, autouse version."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_cnn():
    """The builder :func:`build_tiny_cnn`: ``tiny_cnn(side, classes, widths, pool, seed=, scale=, nested=, name=)``."""
    return build_tiny_cnn


# --- app pages ---------------------------------------------------------------------------------
# Every page test runs the whole app (app.py) in this process through Streamlit's AppTest.

from pathlib import Path as _Path  # noqa: E402 - each section keeps its own imports

import pytest  # noqa: E402

PAGES_ROOT = _Path(__file__).resolve().parents[1]
APP = str(PAGES_ROOT / "app.py")


@pytest.fixture
def app(tmp_path, monkeypatch):
    """A factory of AppTests of the whole app, not yet run: ``app(timeout=300, **session_state)``
    (session state set before the first run: AppTest drops the sidebar's widgets from its tree on
    reruns under ``st.navigation``). Each test gets a fresh result cache on disk
    (``EXPLAINERS_HOME``) and in memory (``st.cache_data`` lives for the whole test process), and
    torch on one thread (the app runs in this process, on a shared 2-core machine)."""
    import streamlit as st
    import torch
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("EXPLAINERS_HOME", str(tmp_path / "explainers-home"))
    st.cache_data.clear()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def make(timeout: int = 300, **state) -> AppTest:
        a = AppTest.from_file(APP, default_timeout=timeout)
        for k, v in state.items():
            a.session_state[k] = v
        return a

    yield make
    torch.set_num_threads(threads)


@pytest.fixture
def at(app):
    """An AppTest of the whole app with the defaults, not yet run (see ``app``)."""
    return app()


def check_controls(a) -> None:
    """Every slider and number box of the page says what it does: a help text naming the paper's
    value or the default (the configs' knob metadata has both)."""
    for w in [*a.slider, *a.select_slider, *a.number_input]:
        text = w.proto.help or ""
        assert text and ("default" in text or "paper" in text), (w.key, w.label, text)


def open_page(a, path: str):
    """Run the app, switch to the page ``path`` (``pages/x.py``), check it raised nothing and that
    its controls explain themselves (:func:`check_controls`)."""
    a.run()
    a.switch_page(path).run()
    assert not a.exception, [e.value for e in a.exception]
    check_controls(a)
    return a


def need(*fits: str, models: tuple[str, ...] = ("shapes-resnet",)) -> None:
    """Skip the test unless the embedded ``models`` are trained and the committed ``fits`` exist:
    a name (``varsal``, ``dcontrol-customised``) per model under ``assets/explainers/<model>/``,
    or a path under ``assets/explainers/`` (``samplers/shapes/patchsampler``)."""
    from explainers.classifiers.embedded import EMBEDDED

    for m in models:
        if not EMBEDDED[m].weights.exists():
            pytest.skip(f"{m} weights not trained yet")
        for fit in fits:
            rel = fit if "/" in fit else f"{m}/{fit}"
            if not (PAGES_ROOT / "assets" / "explainers" / f"{rel}.safetensors").exists():
                pytest.skip(f"no committed {rel} fit")


@pytest.fixture
def pages():
    """The page helpers: ``pages.open(at, "pages/x.py")``, ``pages.need(*fits, models=...)``,
    ``pages.controls(at)``."""
    import types

    return types.SimpleNamespace(open=open_page, need=need, controls=check_controls, app_path=APP)


# --- scripts/ ----------------------------------------------------------------------------------


def load_script(name: str):
    """``scripts/<name>.py`` imported as a module, in this process (the engine is imported already)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, PAGES_ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def script():
    """:func:`load_script`: ``script("sampler_table")`` is ``scripts/sampler_table.py`` as a module."""
    return load_script
