"""The Faithfulness page's sanity check: the work (for a worker thread), its expected seconds, and the
choice of how an amortised method's maps are made on both networks."""
from __future__ import annotations

from typing import Callable, Optional

from explainers import sanity

# how an amortised method's maps are made on the original and every randomised network
HOW = {
    "refit": "refit its fitted part on each network (short fit)",
    "per-image": "per-image optimisation on each network",
}
PER_IMAGE = {"varsal": {"mode": "per-image"}, "dcontrol": {"generator": "optimise"}}
# seconds of one short fit on one CPU thread, shapes-resnet (measured: scripts/sanity_table.py's runs)
FIT_SECONDS = {"varsal": 50.0, "dcontrol": 15.0, "mipin": 5.0}

AMORTISED_NOTE = (
    "An amortised map depends on the classifier only through its fit: VarSal's encoder never calls the classifier "
    "(its map from the committed encoder cannot change when the weights are randomised), the controller's generator "
    "reads the classifier's features, MIP-IN's inverses are fitted to it. So the check never uses a committed fit: "
    "the fitted part is refitted on the original and on every randomised network the same way (a short fit: VarSal "
    "100 steps on 2,000 images, the controller one epoch on 1,000 images, MIP-IN 2,000 images), or, for VarSal and "
    "the controller, both networks are explained per image."
)


def is_amortised(method: str) -> bool:
    return method in PER_IMAGE


def params_for(method: str, how: str) -> dict:
    """The method parameters that make every network's map the way ``how`` says."""
    return dict(PER_IMAGE[method]) if how == "per-image" and method in PER_IMAGE else {}


def run_sanity(clf, image, method: str, target: int, how: str = "refit", seed: int = 0,
               progress: Optional[Callable] = None) -> dict:
    """The cascading randomisation (with its same-network reference) and label sensitivity of one
    method on one image (for a worker thread). ``progress`` follows the fits and the layers."""
    params = params_for(method, how)
    r = sanity.cascading_randomisation(clf, image, method, target=target, seed=seed, progress=progress, method_params=params)
    lab = sanity.label_sensitivity(clf, image, method, target=target, **params)
    return {"result": r, "label": {k: v for k, v in lab.items() if k != "maps"}, "label_maps": lab["maps"]}


def sanity_seconds(pc, method: str, how: str = "refit") -> float:
    """Expected seconds: the method on the original, the reference and every randomised copy, plus one
    more for the runner-up class; a refitted part adds one fit per network (``FIT_SECONDS``)."""
    from explainers.sanity.randomise import parameter_layers
    from ui import page

    layers = len(parameter_layers(pc.clf))
    params = params_for(method, how)
    _, one, _ = page.expected(pc.model_id, pc.device, method, params)
    fits = FIT_SECONDS.get(method, 0.0) * (layers + 2) if sanity.needs_network_fit(method, params) else 0.0
    return (layers + 3) * one + fits
