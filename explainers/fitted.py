"""Where files live, and fitted explainer parts: one leaf module that every other module may use.

- ``home()``: ``$EXPLAINERS_HOME`` (default ``~/.cache/explainers``), the one place that variable is
  read. Under it: ``fitted/<key>/`` (users' fits), ``results/`` (the disk cache), ``datasets/``.
- ``committed_dir(key)``: fits made by the project and committed under ``assets/explainers/<key>/``.
- ``find(key, filename)`` / ``candidates(...)``: one precedence everywhere — the user's fit first,
  then the committed one — so a user's refit is never shadowed.
- ``save_fitted`` / ``load_fitted``: safetensors weights with a JSON card beside them;
  ``Checkpoint``: resumable training state (safetensors + JSON, never pickle).
- ``load_frozen(path, device, build)``: a fitted module loaded once per (path, device), in eval mode,
  with its parameters frozen (it is shared by every session; never mutate it).
- ``file_digest(path)``: a content digest of a fitted file and its card, for cache keys.

Imports nothing from the rest of the package but ``errors``.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from safetensors.torch import load_file, save_file
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"


def home() -> Path:
    """The user's folder for fits, results and generated datasets (``$EXPLAINERS_HOME``)."""
    return Path(os.environ.get("EXPLAINERS_HOME", Path.home() / ".cache" / "explainers")).expanduser()


def committed_dir(key: str) -> Path:
    """Committed fits for a classifier id (or ``samplers/<data>``): ``assets/explainers/<key>``."""
    return ASSETS / "explainers" / key


def user_dir(key: str) -> Path:
    """Users' fits for a classifier id (or ``samplers/<data>``): ``$EXPLAINERS_HOME/fitted/<key>``."""
    return home() / "fitted" / key


def search_dirs(key: str) -> list[Path]:
    """The folders searched for ``key``'s fits, in precedence order (the user's first)."""
    return [user_dir(key), committed_dir(key)]


def candidates(key: str, filename: str) -> list[Path]:
    """Existing fits named ``filename`` (weights with their ``.json`` card) for ``key``, best first."""
    out = []
    for d in search_dirs(key):
        p = d / filename
        if p.exists() and p.with_suffix(".json").exists():
            out.append(p)
    return out


def find(key: str, filename: str) -> Optional[Path]:
    """The fit named ``filename`` for ``key`` (the user's before the committed one), or None."""
    found = candidates(key, filename)
    return found[0] if found else None


# ---------------------------------------------------------------------------------------------
# saving and loading


def _config_dict(config: Any) -> dict:
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    return dict(config)


def _atomic_write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def _atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def save_fitted(path: str | Path, state: dict[str, torch.Tensor] | nn.Module, config: Any, **info: Any) -> Path:
    """Write weights to ``path`` and ``{"config": ..., **info}`` to the JSON card beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = state.state_dict() if isinstance(state, nn.Module) else state
    _atomic_save_tensors(path, tensors)
    _atomic_write_json(path.with_suffix(".json"), {"config": _config_dict(config), **info})
    return path


def load_fitted(path: str | Path, device: torch.device | str = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Return ``(tensors, card)`` where ``card`` is the JSON written beside the weights."""
    path = Path(path)
    card = json.loads(path.with_suffix(".json").read_text())
    return load_file(str(path), device=str(device)), card


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no gradients: a fitted module shared by every caller."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


@functools.lru_cache(maxsize=32)
def _load_frozen(path: str, device: str, build: Callable[[dict], nn.Module], _stamp: tuple) -> tuple[nn.Module, dict]:
    tensors, card = load_fitted(path, device="cpu")
    module = build(card)
    module.load_state_dict(tensors)
    return freeze(module.to(device)), card


def load_frozen(path: str | Path, device: torch.device | str, build: Callable[[dict], nn.Module]) -> tuple[nn.Module, dict]:
    """The fitted module at ``path`` built by ``build(card)``, loaded once per (path, device, file
    version) in eval mode with frozen parameters, and its card. Never mutate what it returns."""
    p = Path(path)
    return _load_frozen(str(p), str(torch.device(device)), build, _stamp(p))


def _stamp(path: Path) -> tuple:
    """What changes when a fit is rewritten in place (so a refit is never served from memory)."""
    out = []
    for p in (path, path.with_suffix(".json")):
        try:
            st = p.stat()
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


@functools.lru_cache(maxsize=256)
def _digest(path: str, _stamp: tuple) -> str:
    h = hashlib.sha256()
    for p in (Path(path), Path(path).with_suffix(".json")):
        if p.exists():
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """A digest of a fitted file's contents and its card (recomputed only when the files change)."""
    p = Path(path)
    return _digest(str(p.resolve()), _stamp(p))


class Checkpoint:
    """Resumable training state under ``<dir>/<name>.ckpt.safetensors`` (+ ``.ckpt.json``)."""

    def __init__(self, directory: str | Path, name: str):
        self.dir = Path(directory)
        self.tensors = self.dir / f"{name}.ckpt.safetensors"
        self.meta = self.dir / f"{name}.ckpt.json"

    def exists(self) -> bool:
        return self.tensors.exists() and self.meta.exists()

    def save(self, model: nn.Module, optimizer: Optional[torch.optim.Optimizer], step: int, **extra: Any) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        opt_meta: dict = {}
        if optimizer is not None:
            sd = optimizer.state_dict()
            for pid, st in sd["state"].items():
                for k, v in st.items():
                    if isinstance(v, torch.Tensor):
                        tensors[f"opt.{pid}.{k}"] = v if v.dim() else v.reshape(1)
                    else:
                        opt_meta.setdefault(str(pid), {})[k] = v
            opt_meta["_param_groups"] = sd["param_groups"]
        _atomic_save_tensors(self.tensors, tensors)
        _atomic_write_json(self.meta, {"step": step, "optimizer": opt_meta, "extra": extra})

    def load(self, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None) -> tuple[int, dict]:
        """Restore model (and optimiser) state; returns ``(step, extra)``."""
        tensors = load_file(str(self.tensors))
        meta = json.loads(self.meta.read_text())
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        if optimizer is not None and meta["optimizer"]:
            om = meta["optimizer"]
            ref = optimizer.state_dict()
            state: dict = {}
            for key, v in tensors.items():
                if not key.startswith("opt."):
                    continue
                _, pid, name = key.split(".", 2)
                state.setdefault(int(pid), {})[name] = v
            for pid, st in om.items():
                if pid == "_param_groups":
                    continue
                state.setdefault(int(pid), {}).update(st)
            for st in state.values():  # Adam keeps `step` as a 0-d tensor
                if "step" in st and isinstance(st["step"], torch.Tensor):
                    st["step"] = st["step"].reshape(())
            groups = om.get("_param_groups", ref["param_groups"])
            optimizer.load_state_dict({"state": state, "param_groups": groups})
        return int(meta["step"]), meta.get("extra", {})

    def remove(self) -> None:
        for p in (self.tensors, self.meta):
            if p.exists():
                p.unlink()
