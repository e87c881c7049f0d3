"""Explainers: an engine for explaining image classifiers (plain PyTorch + NumPy, no UI).

    from explainers import list_classifiers, load_classifier, explain, METHODS
    clf = load_classifier("shapes-resnet")
    result = explain(clf, pil_image, "pmi-ig", K=8, N=8, stride=4, seed=0)
"""
from .classifiers import Classifier, ClassifierEntry, list_classifiers, load_classifier
from .core import METHODS, Explanation, MethodSpec, explain, get_method, make_config
from .errors import Cancelled, ExplainerError
from . import methods as _methods  # noqa: F401  (fills METHODS)

__all__ = [
    "Cancelled",
    "Classifier",
    "ClassifierEntry",
    "Explanation",
    "ExplainerError",
    "METHODS",
    "MethodSpec",
    "explain",
    "get_method",
    "list_classifiers",
    "load_classifier",
    "make_config",
]
