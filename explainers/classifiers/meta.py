"""The ``explainers`` metadata of a user's network: input size, resize, mean, std, labels, title.

It comes from a safetensors metadata entry ``explainers`` (JSON), a TorchScript / torch.export
extra file ``explainers.json``, a sidecar ``NAME.json`` beside the file, or a models-folder
file's ``META`` dict; :func:`check_meta` validates all of them alike, one line naming the key at fault.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ..errors import ExplainerError, one_line

META_NAME = "explainers.json"  # TorchScript / torch.export extra file
META_KEY = "explainers"  # safetensors metadata key


def _parse_meta(raw: Optional[str], name: str) -> dict:
    if not raw:
        return {}
    try:
        meta = json.loads(raw)
    except ValueError as e:
        raise ExplainerError(f"{name}: bad {META_KEY} metadata (not JSON: {one_line(e, 60)})") from None
    return check_meta(meta, f"{name}: bad {META_KEY} metadata")


META_KEYS = ("input_size", "resize", "mean", "std", "labels", "title")


def check_meta(meta, where: str) -> dict:
    """Validate a metadata dict (``input_size``, ``resize``, ``mean``, ``std``, ``labels``, ``title``);
    raises one line, ``where`` followed by the key at fault and what it should be."""
    def bad(key: str, want: str) -> ExplainerError:
        return ExplainerError(f"{where} ({key} must be {want}, got {one_line(repr(meta.get(key)), 40)})")

    if not isinstance(meta, dict):
        raise ExplainerError(f"{where} (must be a dict, got {type(meta).__name__})")
    unknown = sorted(str(k) for k in meta if k not in META_KEYS)
    if unknown:
        raise ExplainerError(f"{where} (unknown key {unknown[0]!r}; known: {', '.join(META_KEYS)})")
    out: dict = {}
    if "input_size" in meta:
        size = meta["input_size"]
        try:
            size = (size, size) if isinstance(size, int) else tuple(size)
            ok = len(size) == 2 and all(isinstance(s, int) and not isinstance(s, bool) and 8 <= s <= 4096 for s in size)
        except TypeError:
            ok = False
        if not ok:
            raise bad("input_size", "an int or [H, W] of ints in 8..4096")
        out["input_size"] = tuple(size)
    if "resize" in meta:
        r = meta["resize"]
        if r is not None and not (isinstance(r, int) and not isinstance(r, bool) and 8 <= r <= 8192):
            raise bad("resize", "null or an int in 8..8192")
        out["resize"] = r
    for key in ("mean", "std"):
        if key in meta:
            try:
                vals = tuple(float(v) for v in meta[key])
            except (TypeError, ValueError):
                vals = ()
            if len(vals) != 3 or not all(v == v and abs(v) < 1e6 for v in vals) or (key == "std" and min(vals) <= 0):
                raise bad(key, "three " + ("positive numbers" if key == "std" else "numbers"))
            out[key] = vals
    if "labels" in meta:
        labels = meta["labels"]
        if not isinstance(labels, (list, tuple)) or not labels:
            raise bad("labels", "a non-empty list of class names")
        out["labels"] = [str(v) for v in labels]
    if "title" in meta:
        out["title"] = str(meta["title"])[:80]
    return out


def sidecar_meta(path: Path) -> dict:
    """The metadata in ``NAME.json`` beside ``path`` (for TorchScript and ``.pt2`` files), or {}."""
    side = path.with_suffix(".json")
    if not side.is_file():
        return {}
    return _parse_meta(side.read_text(errors="replace"), side.name)
