"""Defaults that fit the input size and the device: lighter on a CPU at 224 px, the configs'
(papers') values on a GPU and for the small built-in models."""
import torch

import explainers
from explainers import cost
from explainers.classifiers.torchvision_zoo import random_init


def test_small_inputs_and_gpus_keep_the_paper_defaults():
    for m in explainers.METHODS:
        assert cost.sized_defaults(m, (64, 64), "cpu") == ({}, "")
        assert cost.sized_defaults(m, (224, 224), "cuda") == ({}, "")


def test_large_inputs_on_cpu_cost_less_and_are_valid_configs():
    clf = random_init("resnet18")
    for m in cost.CPU_LARGE:
        params, line = cost.sized_defaults(m, (224, 224), "cpu")
        assert params and "one click" in line
        explainers.core.make_config(m, **params)  # valid knobs
        light, paper = cost.estimate(clf, m, params), cost.estimate(clf, m, None)
        assert light.forwards + light.passes < (paper.forwards + paper.passes) / 2


def test_the_side_by_side_page_starts_224px_cpu_work_lighter_and_the_papers_values_are_one_click_away(app):
    """On a photograph (efficientnet-lite0, 224 px, CPU) Occlusion's window starts at the lighter 16
    px and the page says so; the "Paper's settings" toggle brings back the config's 8 px. Occlusion
    at 224 waits for its Run button, so nothing is computed here."""
    first = app(**{"compare.methods": ["occlusion"]}).run()
    coffee = next(i for i, o in enumerate(first.sidebar.selectbox(key="sample").options) if o.startswith("Coffee"))
    a = app(sample=coffee, **{"compare.methods": ["occlusion"]})
    a.run()
    a.switch_page("pages/compare.py").run()
    assert not a.exception, [e.value for e in a.exception]
    assert a.session_state["ctx"].model_id == "efficientnet-lite0"
    assert a.slider(key="compare.occlusion.window.lighter").value == 16
    assert any("Lighter settings for 224×224 on the cpu" in c.value for c in a.caption)
    a.toggle(key="lighter.paper").set_value(True).run()
    assert not a.exception
    assert a.slider(key="compare.occlusion.window").value == 8
    assert not any("Lighter settings" in c.value for c in a.caption)
