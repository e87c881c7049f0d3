"""The models folder: the user's own architectures, listed as classifiers by file stem.

A folder holds, per network ``NAME``:

- ``NAME.py`` defining ``build() -> torch.nn.Module`` (and optionally a ``META`` dict with
  ``input_size``, ``resize``, ``mean``, ``std``, ``labels``, ``title``), beside its weights
  ``NAME.safetensors`` or a plain state dict ``NAME.pt`` / ``NAME.pth`` (read with
  ``torch.load(weights_only=True)``). **``NAME.py`` is imported, i.e. run as the user's own code**,
  which is why it is only ever read from the server's own disk (never uploaded).
- or a ``torch.export`` file ``NAME.pt2`` / a TorchScript file ``NAME.pt`` (no ``NAME.py``), with
  an optional sidecar ``NAME.json`` holding the same keys as ``META``.

The folders, first match of a name wins: those in ``$EXPLAINERS_MODELS`` (several joined by
``os.pathsep``; the command line's ``--models DIR`` sets it), then ``$EXPLAINERS_HOME/models``.
Listing only looks at file names; the code runs when the network is loaded, and every failure
(no ``build``, a state dict that does not fit, a bad ``META``) is one line naming the problem.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Optional

import torch

from .. import fitted
from ..errors import ExplainerError, one_line
from .base import Classifier, ClassifierEntry

ENV = "EXPLAINERS_MODELS"
WEIGHTS = (".safetensors", ".pt", ".pth")
SHOWN = 3  # keys named in a mismatch message


def folders() -> list[Path]:
    """The models folders, in precedence order."""
    out = [Path(p).expanduser() for p in os.environ.get(ENV, "").split(os.pathsep) if p.strip()]
    return out + [fitted.home() / "models"]


def _kind(path: Path) -> str:
    """A ``.pt`` without its ``.py``: TorchScript, a torch.export archive, or a lone state dict."""
    from .exported import is_exported
    from .user import _is_torchscript

    try:
        return "torchscript" if _is_torchscript(path) else "export" if is_exported(path) else "orphan"
    except OSError:
        return "orphan"


def _scan() -> dict[str, dict]:
    """name -> {"kind": code | export | torchscript | orphan, "code", "weights", "file"} (first folder wins)."""
    found: dict[str, dict] = {}
    for d in folders():
        if not d.is_dir():
            continue
        files = sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith((".", "_")))
        stems = {p.stem for p in files if p.suffix == ".py"}
        for p in files:
            name = p.stem
            if name in found:
                continue
            if p.suffix == ".py":
                weights = next((d / f"{name}{s}" for s in WEIGHTS if (d / f"{name}{s}").is_file()), None)
                found[name] = {"kind": "code", "code": p, "weights": weights}
            elif name not in stems and p.suffix == ".pt2":
                found[name] = {"kind": "export", "file": p}
            elif name not in stems and p.suffix in (".pt", ".pth", ".ts", ".torchscript"):
                found[name] = {"kind": _kind(p), "file": p}
    return found


def entries(taken: set[str]) -> list[ClassifierEntry]:
    """One row per network in the models folders (file names only: no code runs); ``taken`` are
    the built-in ids, which a models-folder name may not shadow."""
    rows = []
    for name, f in _scan().items():
        reason = ""
        if name in taken:
            reason = f"{name} is a built-in classifier id; rename the files in {(f.get('code') or f['file']).parent}"
        elif f["kind"] == "code" and f["weights"] is None:
            reason = f"no {name}.safetensors or {name}.pt beside {f['code']}"
        elif f["kind"] == "orphan":
            reason = f"{f['file'].name} is a state dict: put {name}.py with build() beside it"
        title = {"code": f"{name} (models folder)", "export": f"{name} (torch.export)",
                 "torchscript": f"{name} (TorchScript: layers hidden)", "orphan": f"{name} (models folder)"}[f["kind"]]
        rows.append(ClassifierEntry(name, title, "user", not reason, reason, None, 0))
    return rows


def is_known(name: str) -> bool:
    return name in _scan()


def files(name: str) -> list[Path]:
    """The files a network is loaded from (for cache stamps)."""
    f = _scan().get(name)
    if f is None:
        return []
    paths = [f.get("code"), f.get("weights"), f.get("file")]
    paths = [p for p in paths if p is not None]
    return paths + [p.with_suffix(".json") for p in paths[-1:]]


def _import(path: Path):
    """Run ``path`` as a module (the user's own code) under a private name; one line when it fails."""
    stamp = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
    modname = f"explainers_models_{path.stem}_{stamp}"
    spec = importlib.util.spec_from_file_location(modname, path)
    if spec is None or spec.loader is None:
        raise ExplainerError(f"{path.name}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the user's code may raise anything
        sys.modules.pop(modname, None)
        raise ExplainerError(f"{path.name} fails on import ({type(e).__name__}: {one_line(e, 100)})") from None
    return module


def _fit_message(name: str, wname: str, missing: list, unexpected: list, shapes: list) -> str:
    def some(keys: list) -> str:
        more = f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
        return ", ".join(keys[:SHOWN]) + more

    parts = []
    if missing:
        parts.append(f"missing keys {some(missing)}")
    if unexpected:
        parts.append(f"unexpected keys {some(unexpected)}")
    if shapes:
        k, a, b = shapes[0]
        parts.append(f"{k} is {tuple(a)} in the file but {tuple(b)} in the model" + (f" (and {len(shapes) - 1} more shapes)" if len(shapes) > 1 else ""))
    return f"{wname} does not fit {name}.py's build(): " + "; ".join(parts)


def load_state(net: torch.nn.Module, state: dict[str, torch.Tensor], name: str, wname: str) -> None:
    """Load ``state`` into ``net`` strictly, or raise one line naming missing/unexpected keys and wrong shapes.

    A missing ``num_batches_tracked`` is allowed (ported checkpoints often lack it; eval mode never reads it)."""
    ref = net.state_dict()
    missing = [k for k in ref if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in ref]
    shapes = [(k, state[k].shape, ref[k].shape) for k in ref if k in state and state[k].shape != ref[k].shape]
    if missing or unexpected or shapes:
        raise ExplainerError(_fit_message(name, wname, missing, unexpected, shapes))
    net.load_state_dict(state, strict=False)


def build_net(name: str) -> tuple[torch.nn.Module, dict, Path]:
    """(the network ``NAME.py``'s ``build()`` returns, its checked ``META``, the ``.py`` path), weights not loaded."""
    from .user import check_meta

    f = _scan().get(name)
    if f is None or f["kind"] != "code":
        raise ExplainerError(f"no {name}.py in the models folders ({', '.join(map(str, folders()))})")
    code = f["code"]
    module = _import(code)
    build = getattr(module, "build", None)
    if not callable(build):
        raise ExplainerError(f"{code.name} defines no build() function returning the torch.nn.Module")
    meta = check_meta(getattr(module, "META", {}), f"{code.name}: bad META")
    try:
        net = build()
    except Exception as e:  # noqa: BLE001 - the user's code
        raise ExplainerError(f"{code.name}: build() fails ({type(e).__name__}: {one_line(e, 100)})") from None
    if not isinstance(net, torch.nn.Module):
        raise ExplainerError(f"{code.name}: build() must return a torch.nn.Module, not {type(net).__name__}")
    return net, meta, code


def load(name: str, device: torch.device, labels: Optional[list[str]] = None) -> Classifier:
    """Build, load and check the network ``name`` of the models folder (see the module doc)."""
    from .user import _probe, _read_plain, _read_safetensors, _is_safetensors, load_checkpoint, make_classifier

    f = _scan().get(name)
    if f is None:
        raise ExplainerError(f"no network {name!r} in the models folders ({', '.join(map(str, folders()))})")
    if f["kind"] in ("export", "torchscript", "orphan"):
        if f["kind"] == "orphan":
            raise ExplainerError(f"{f['file'].name} is a state dict: put {name}.py with build() beside it")
        return load_checkpoint(f["file"], labels=labels, device=device, model_id=name)
    if f["weights"] is None:
        raise ExplainerError(f"no {name}.safetensors or {name}.pt beside {f['code']}")
    net, meta, code = build_net(name)
    wpath = f["weights"]
    if _is_safetensors(wpath):
        state, file_meta = _read_safetensors(wpath)
    else:
        state, file_meta = _read_plain(wpath), {}
    load_state(net, state, name, wpath.name)
    meta = {**file_meta, **meta}  # META in the code wins over the file's metadata
    net.eval()
    n = _probe(net, meta.get("input_size", (224, 224)), code.name, batch=2)
    return make_classifier(name, net, n, meta, labels, device,
                           {"title": meta.get("title", f"{name} (models folder)"), "kind": "models-folder",
                            "file": str(wpath), "code": str(code)})
