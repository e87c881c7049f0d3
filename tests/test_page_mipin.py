"""AppTest of the MIP-IN page: maps, source signal, λ slider, layer-by-layer signals, no traceback."""
from __future__ import annotations

PAGE = "pages/mipin.py"


def test_page_shows_attribution_source_and_layers(at, pages):
    pages.need("mipin")
    pages.open(at, PAGE)
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


def test_page_on_a_whole_network(at, pages):
    pages.need("mipin", models=("digits-cnn",))
    at.run()
    at.sidebar.selectbox(key="model_id").set_value("digits-cnn").run()
    at.switch_page(PAGE).run()
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    assert len(at.get("imgs")) >= 1 or len(at.get("image")) >= 1


def test_page_without_a_fit_shows_the_command_not_a_traceback(at, pages, monkeypatch):
    import sys

    import explainers.methods.mipin  # noqa: F401 - the package and its modules, wherever fitted_paths is used

    for name, mod in list(sys.modules.items()):
        if name.startswith("explainers.methods.mipin") and hasattr(mod, "fitted_paths"):
            monkeypatch.setattr(mod, "fitted_paths", lambda clf: [])
    pages.open(at, PAGE)
    assert at.error and "python -m explainers fit --explainer mipin" in at.error[0].value
