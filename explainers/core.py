"""The public entry point ``explain`` and the method registry.

A method is one module in ``explainers/methods/`` that defines a frozen dataclass config and a
function ``run(clf, x01, target, config, progress) -> MethodOutput``, and registers both with
:func:`register`. Adding a method is one new module plus one import line in
``explainers/methods/__init__.py``.

``run`` receives the image in pixel space (a (1, 3, H, W) float tensor in [0, 1] on the
classifier's device) and the resolved target class index; it returns raw maps (H, W) at the
classifier's input size. Maps are never min-max normalised here: their values keep their units.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from PIL import Image

from . import config
from .classifiers.base import Classifier
from .errors import ExplainerError


@dataclass
class MethodOutput:
    maps: dict[str, np.ndarray]
    extras: dict[str, Any] = field(default_factory=dict)  # method-specific arrays for pages (not exported)
    meta: dict[str, Any] = field(default_factory=dict)  # method-specific facts (e.g. "amortised": True)


@dataclass
class Explanation:
    """What ``explain`` returns: raw maps (float32, (H, W)) and the facts needed to reproduce them."""

    maps: dict[str, np.ndarray]
    meta: dict[str, Any]
    extras: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | Path | io.IOBase) -> Path | io.IOBase:
        """Write the maps and ``meta`` (a JSON string) to an ``.npz`` file (a path or a binary file)."""
        arrays = {k: np.asarray(v, dtype=np.float32) for k, v in self.maps.items()}
        meta = np.array(json.dumps(self.meta, default=_json_default))
        if hasattr(path, "write"):
            np.savez_compressed(path, **arrays, meta=meta)
            return path
        path = Path(path)
        np.savez_compressed(path, **arrays, meta=meta)
        return path if path.suffix == ".npz" else path.with_suffix(path.suffix + ".npz")

    @staticmethod
    def combine(results: list["Explanation"]) -> "Explanation":
        """Several methods' results in one: maps named ``<method>.<map>``, meta per method, plus the
        command lines that reproduce each one."""
        maps, metas, commands = {}, {}, []
        for r in results:
            m = r.meta["method"]
            maps.update({f"{m}.{k}": v for k, v in r.maps.items()})
            metas[m] = r.meta
            sets = " ".join(f"--set {k}={v}" for k, v in r.meta["params"].items() if v is not None)
            commands.append(
                f"python -m explainers explain --model {r.meta['model']} --image IMAGE --method {m} "
                f"--target {r.meta['target']} {sets} --out {m}.npz"
            )
        return Explanation(maps, {"methods": metas, "commands": commands})

    @staticmethod
    def load(path: str | Path) -> "Explanation":
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            maps = {k: z[k] for k in z.files if k != "meta"}
        return Explanation(maps, meta)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    return str(o)


# The project's papers by file id (the papers folder's file names): ``MethodSpec.paper`` is one of
# these keys, and ``PAPERS[spec.paper]`` its title.
PAPERS = {
    "000_3821e9a6f7050c9a": "Information-Theoretic Visual Explanation for Black-Box Classifiers",
    "001_0118de9508c317d1": "Discriminative Model-Agnostic Vision Explainer for Differentiable Classifiers",
    "002_41cd62fe8cab1855": "Variational Saliency Maps for Explaining Model's Behavior",
    "003_b67efb941534cde0": "Distribution-Guided Local Explanation for Black-Box Classifiers",
    "004_ac7769c5886fab98": "Mutual Information Preserving Back-propagation: Learn to Invert for Faithful Attribution",
}


@dataclass(frozen=True)
class MethodSpec:
    name: str
    title: str
    config: type  # a frozen dataclass; its fields are the method's knobs
    run: Callable[..., MethodOutput]
    maps: dict[str, str]  # map name -> kind: "signed" (diverging at 0), "mask" ([0, 1]), "positive" (>= 0)
    units: dict[str, str]  # map name -> unit shown in colour bars ("bits", "probability", ...)
    paper: str = ""  # the project paper's file id (a key of PAPERS); "" for the standard baselines
    needs_fit: bool = False  # amortised part fitted by `python -m explainers fit`
    cite: str = ""  # the literature reference of a method with no project paper ("Zeiler & Fergus 2014")


METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    if spec.name in METHODS:
        raise RuntimeError(f"method {spec.name!r} registered twice")
    if not dataclasses.is_dataclass(spec.config):
        raise TypeError("a method's config must be a dataclass")
    if spec.paper and spec.paper not in PAPERS:
        raise ValueError(f"method {spec.name!r}: paper must be a file id of PAPERS, got {spec.paper!r}")
    METHODS[spec.name] = spec
    return spec


def make_config(method: str, **params: Any):
    """Build and validate a method's config from keyword values (strings accepted, as from the CLI)."""
    return config.parse(get_method(method).config, params, owner=f"method {method}")


def get_method(name: str) -> MethodSpec:
    """The registered method ``name`` (the package's ``__init__`` imports the methods, which register)."""
    if name not in METHODS:
        raise ExplainerError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def as_pixels(clf: Classifier, image: Any) -> torch.Tensor:
    """Accept a PIL image, a path, raw bytes or a pixel tensor (3, H, W) in [0, 1]."""
    if isinstance(image, torch.Tensor):
        x = image.detach().float()
        if x.dim() == 4:
            x = x[0]
        if x.shape[-2:] != tuple(clf.input_size) or x.shape[0] != 3:
            raise ExplainerError(f"pixel tensor must be (3, {clf.input_size[0]}, {clf.input_size[1]})")
        return x.cpu()
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if isinstance(image, (str, Path, bytes, io.IOBase)):
        from .data.images import load_image

        image = load_image(image)
    if not isinstance(image, Image.Image):
        raise ExplainerError(f"cannot read an image from {type(image).__name__}")
    return clf.pixels(image)


def image_digest(x01: torch.Tensor) -> str:
    """A stable short hash of a pixel tensor (keys caches and names exports)."""
    arr = (x01.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return hashlib.sha256(arr.tobytes()).hexdigest()[:16]


def explain(
    clf: Classifier,
    image: Any,
    method: str,
    target: int | str | None = None,
    progress: Optional[Callable] = None,
    **params: Any,
) -> Explanation:
    """Explain ``clf``'s decision on ``image`` with ``method``.

    ``target`` is a class index or label (default: the top-1 class). ``params`` are the method's
    config fields (see ``METHODS[method].config``). ``progress(done, total, message)`` is called
    during long work; raise ``explainers.Cancelled`` from it to stop.
    """
    spec = get_method(method)
    config = make_config(method, **params)
    x01 = as_pixels(clf, image).unsqueeze(0).to(clf.device)
    probs = clf.probabilities(x01)[0].cpu()
    t = clf.label_index(target, x01)
    start = time.perf_counter()
    out = spec.run(clf, x01, t, config, progress)
    seconds = time.perf_counter() - start
    h, w = clf.input_size
    maps = {}
    for name, m in out.maps.items():
        arr = np.asarray(m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else m, dtype=np.float32)
        if arr.shape != (h, w):
            raise RuntimeError(f"{method} returned map {name} of shape {arr.shape}, expected {(h, w)}")
        maps[name] = arr
    top = probs.topk(min(5, probs.numel()))
    meta = {
        "method": method,
        "params": dataclasses.asdict(config),
        "target": t,
        "target_label": clf.labels[t],
        "probability": float(probs[t]),
        "top5": [[int(i), clf.labels[int(i)], float(v)] for v, i in zip(top.values, top.indices)],
        "model": clf.id,
        "image_sha": image_digest(x01[0]),
        "input_size": list(clf.input_size),
        "device": str(clf.device),
        "units": spec.units,
        "kinds": spec.maps,
        "seconds": round(seconds, 4),
        **out.meta,
    }
    return Explanation(maps, meta, out.extras)
