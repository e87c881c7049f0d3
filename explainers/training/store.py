"""Saving and loading fitted parts: safetensors weights with a JSON config beside them.

``save_fitted(path, state, config)`` writes ``path`` (``.safetensors``) and ``path.with_suffix('.json')``.
``Checkpoint`` saves training state (weights, optimiser, step) every so often so a run resumes
where it stopped; it uses safetensors for tensors and JSON for the rest, never pickle.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file, save_file
from torch import nn


def _config_dict(config: Any) -> dict:
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    return dict(config)


def _atomic_write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def _atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def save_fitted(path: str | Path, state: dict[str, torch.Tensor] | nn.Module, config: Any, **info: Any) -> Path:
    """Write weights to ``path`` and ``{"config": ..., **info}`` to the JSON file beside it."""
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
