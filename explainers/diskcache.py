"""A disk cache for explanations, so a restart or a second session does not recompute a map.

Keyed on plain values only: classifier id, image digest, method, the full resolved config, target
class and the engine's cache version. Entries are the same ``.npz`` files as ``explain --out``
(plus the extras, when they are plain arrays), written atomically; a corrupt entry is ignored
and recomputed. The folder is ``$EXPLAINERS_HOME/results`` (default ``~/.cache/explainers/results``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from . import fitted
from .core import Explanation, as_pixels, explain, image_digest, make_config

CACHE_VERSION = 2  # bumped when a method's numbers change (2: DSSR+ with fused Eq. 1 and Adam)


def cache_dir() -> Path:
    return fitted.home() / "results"


def cache_key(model_id: str, image_sha: str, method: str, config: Any, target: int) -> str:
    payload = json.dumps(
        {"v": CACHE_VERSION, "model": model_id, "image": image_sha, "method": method,
         "config": dataclasses.asdict(config), "target": target},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _save(path: Path, result: Explanation) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"map.{k}": np.asarray(v, np.float32) for k, v in result.maps.items()}
    plain = {}
    for k, v in result.extras.items():
        if hasattr(v, "detach"):
            v = v.detach().cpu().numpy()
        if isinstance(v, np.ndarray) and v.dtype != object:
            arrays[f"extra.{k}"] = v
        else:
            try:
                plain[k] = json.loads(json.dumps(v))
            except (TypeError, ValueError):
                pass  # not storable: the page recomputes what needs it
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(fd)
    np.savez(tmp, meta=np.array(json.dumps(result.meta, default=str)), extras_json=np.array(json.dumps(plain)), **arrays)
    os.replace(tmp, path)


def _load(path: Path) -> Optional[Explanation]:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            maps = {k[4:]: z[k] for k in z.files if k.startswith("map.")}
            extras = json.loads(str(z["extras_json"])) if "extras_json" in z.files else {}
            extras.update({k[6:]: z[k] for k in z.files if k.startswith("extra.")})
        return Explanation(maps, meta, extras)
    except Exception:  # a corrupt or partial entry: recompute
        return None


def entry_path(clf, image: Any, method: str, target: int | str | None = None, directory: Optional[Path] = None, **params: Any) -> Path:
    """Where ``cached_explain`` keeps (or would keep) this result."""
    config = make_config(method, **params)
    x01 = as_pixels(clf, image)
    t = clf.label_index(target, x01.unsqueeze(0).to(clf.device))
    return (directory or cache_dir()) / method / f"{cache_key(clf.id, image_digest(x01), method, config, t)}.npz"


def cached_explain(
    clf,
    image: Any,
    method: str,
    target: int | str | None = None,
    progress: Optional[Callable] = None,
    directory: Optional[Path] = None,
    **params: Any,
) -> Explanation:
    """``explain`` with a disk cache in front of it; ``meta["cached"]`` says whether it hit."""
    config = make_config(method, **params)
    x01 = as_pixels(clf, image)
    t = clf.label_index(target, x01.unsqueeze(0).to(clf.device))
    path = (directory or cache_dir()) / method / f"{cache_key(clf.id, image_digest(x01), method, config, t)}.npz"
    if path.exists():
        hit = _load(path)
        if hit is not None:
            hit.meta["cached"] = True
            return hit
    result = explain(clf, x01, method, target=t, progress=progress, **dataclasses.asdict(config))
    try:
        _save(path, result)
    except OSError:  # a read-only or full disk only loses the cache, never the result
        pass
    result.meta["cached"] = False
    return result
