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
