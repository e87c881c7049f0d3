"""A disk cache for explanations, so a restart or a second session does not recompute a map.

An entry is keyed on everything that makes its map: the classifier (id, a digest of its weights,
its preprocessing, labels and device type), a digest of every fitted file the method could read
(the classifier's fit folders, all sampler folders, and any config value naming an existing file or
folder), the image's pixels, the method, its full resolved config, the target class and a digest of
the engine's source. So a changed checkpoint, a refit or a new engine gives a fresh map, never an
old one; it may over-key (a refit of one explainer also misses the others' entries of that
classifier), which costs only a recomputation.

Entries are the same ``.npz`` files as ``explain --out`` (plus the extras, when they are plain
arrays), written to a unique temporary file and renamed into place, so concurrent writers never
leave a partial entry; a corrupt entry is ignored and recomputed. The folder is
``$EXPLAINERS_HOME/results`` (default ``~/.cache/explainers/results``); its size is capped at
``$EXPLAINERS_CACHE_MAX_BYTES`` (default 1 GB; 0 turns writing off): after a write the least
recently used entries (a hit refreshes an entry's mtime) are removed until it fits.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from . import fitted
from .core import Explanation, as_pixels, explain, make_config
from .errors import ExplainerError

CACHE_VERSION = 3  # a manual override on top of the engine digest (3: keys with weights and fits)
MAX_BYTES_ENV = "EXPLAINERS_CACHE_MAX_BYTES"
DEFAULT_MAX_BYTES = 1_000_000_000
_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_TMP = ".tmp.npz"  # suffix of entries being written
_STALE_TMP_S = 3600  # a temporary file this old was left by a writer that died


def cache_dir() -> Path:
    return fitted.home() / "results"


def max_bytes() -> int:
    """The size cap from ``$EXPLAINERS_CACHE_MAX_BYTES`` (bytes, or with a K/M/G/T suffix)."""
    raw = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    text = raw.upper().removesuffix("B")
    unit = text[-1:] if text[-1:] in _UNITS and text[-1:] else ""
    try:
        value = float(text[: len(text) - len(unit)]) * _UNITS[unit]
    except ValueError:
        value = -1
    if not value >= 0 or value == float("inf"):
        raise ExplainerError(f"{MAX_BYTES_ENV}={raw!r}: expected a size such as 1000000000, 500M or 2G")
    return int(value)


# -- what makes a map ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def engine_digest() -> str:
    """A digest of the engine's source (``explainers/**/*.py``), once per process."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def classifier_digest(clf) -> str:
    """The classifier's weights and everything else it brings to a map (preprocessing, labels, device type)."""
    facts = [clf.weights_digest(), list(clf.input_size), list(clf.mean), list(clf.std), clf.grayscale,
             clf.resize, list(clf.labels), clf.device.type]
    return hashlib.sha256(json.dumps(facts, default=str).encode()).hexdigest()[:16]


def _files(path: Path) -> Iterator[Path]:
    """``path`` if it is a file, else every file under it (sorted), less files still being written
    and resumable training checkpoints (which no method reads)."""
    if path.is_file():
        yield path
        return
    for root, dirs, names in os.walk(path):
        dirs.sort()
        for name in sorted(names):
            if not (name.endswith(".tmp") or ".ckpt." in name):
                yield Path(root) / name


def fit_files(clf, config: Any = None) -> list[Path]:
    """Every fitted file a method could read for ``clf``: its fit folders (the user's and the
    committed), every sampler folder, and whatever an explicit config value names (``fit=``,
    ``encoder=``, ``sampler_data=`` paths)."""
    roots = [*fitted.search_dirs(clf.id), *fitted.search_dirs("samplers")]
    if config is not None:
        for value in dataclasses.asdict(config).values():
            if isinstance(value, str) and value.strip():
                roots.append(Path(value).expanduser())
    out: dict[Path, None] = {}
    for root in roots:
        if root.exists():
            out.update(dict.fromkeys(_files(root)))
    return list(out)


def fits_digest(clf, config: Any = None) -> str:
    """A digest of :func:`fit_files` (names and contents; each file hashed again only when it changes)."""
    h = hashlib.sha256()
    for p in fit_files(clf, config):
        try:
            d = fitted.file_digest(p)
        except OSError:  # removed while we looked: key on its absence
            d = "gone"
        h.update(f"{p}\0{d}\0".encode())
    return h.hexdigest()[:16]


def _pixels_digest(x01) -> str:
    # the exact float pixels (not a rounded copy): two tensors that differ anywhere are two entries
    arr = x01.detach().cpu().float().contiguous().numpy()
    return hashlib.sha256(repr(arr.shape).encode() + arr.tobytes()).hexdigest()[:16]


def _entry(clf, image: Any, method: str, target, directory: Optional[Path], params: dict):
    """The one key computation: ``(path, config, x01, target index)`` of this request's entry."""
    config = make_config(method, **params)
    x01 = as_pixels(clf, image)
    t = clf.label_index(target, x01.unsqueeze(0).to(clf.device))
    payload = json.dumps(
        {"v": CACHE_VERSION, "engine": engine_digest(), "model": clf.id, "classifier": classifier_digest(clf),
         "fits": fits_digest(clf, config), "image": _pixels_digest(x01), "method": method,
         "config": dataclasses.asdict(config), "target": t},
        sort_keys=True, default=str,
    )
    key = hashlib.sha256(payload.encode()).hexdigest()[:32]
    return (directory or cache_dir()) / method / f"{key}.npz", config, x01, t


def entry_path(clf, image: Any, method: str, target: int | str | None = None, directory: Optional[Path] = None, **params: Any) -> Path:
    """Where ``cached_explain`` keeps (or would keep) this result."""
    return _entry(clf, image, method, target, directory, params)[0]


# -- entries ----------------------------------------------------------------------------------------
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
    # a unique temporary name per writer, renamed into place: readers and other writers of the same
    # key see the old entry, nothing, or a whole new one — never a partial file
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=_TMP)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(result.meta, default=str)), extras_json=np.array(json.dumps(plain)), **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load(path: Path) -> Optional[Explanation]:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            maps = {k[4:]: z[k] for k in z.files if k.startswith("map.")}
            extras = json.loads(str(z["extras_json"])) if "extras_json" in z.files else {}
            extras.update({k[6:]: z[k] for k in z.files if k.startswith("extra.")})
        return Explanation(maps, meta, extras)
    except Exception:  # a corrupt or partial entry (or one evicted meanwhile): recompute
        return None


def _scan(directory: Path) -> tuple[list[tuple[float, int, Path]], list[tuple[float, Path]]]:
    """``(entries, temporary files)`` under ``directory``: (mtime, size, path) and (mtime, path)."""
    entries, temps = [], []
    for p in directory.rglob("*.npz") if directory.is_dir() else ():
        try:
            st = p.stat()
        except OSError:  # removed by another process meanwhile
            continue
        if p.name.endswith(_TMP):
            temps.append((st.st_mtime, p))
        else:
            entries.append((st.st_mtime, st.st_size, p))
    return entries, temps


def evict(directory: Optional[Path] = None, cap: Optional[int] = None) -> int:
    """Remove the least recently used entries until the folder holds at most ``cap`` bytes (default
    :func:`max_bytes`), and temporary files left by dead writers; returns how many entries went."""
    directory = directory or cache_dir()
    cap = max_bytes() if cap is None else cap
    entries, temps = _scan(directory)
    now = time.time()
    for mtime, p in temps:
        if now - mtime > _STALE_TMP_S:
            p.unlink(missing_ok=True)
    total, removed = sum(size for _, size, _ in entries), 0
    for _, size, p in sorted(entries):
        if total <= cap:
            break
        p.unlink(missing_ok=True)  # another process may have removed it first
        total -= size
        removed += 1
    return removed


def cache_info(directory: Optional[Path] = None) -> dict:
    """The folder, its number of entries, their total size in bytes and the cap."""
    directory = directory or cache_dir()
    entries, _ = _scan(directory)
    return {"folder": str(directory), "entries": len(entries), "bytes": sum(s for _, s, _ in entries), "max_bytes": max_bytes()}


def clear(directory: Optional[Path] = None) -> tuple[int, int]:
    """Remove every entry (and temporary file); returns ``(entries removed, bytes freed)``."""
    entries, temps = _scan(directory or cache_dir())
    for _, p in temps:
        p.unlink(missing_ok=True)
    for _, _, p in entries:
        p.unlink(missing_ok=True)
    return len(entries), sum(s for _, s, _ in entries)


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
    cap = max_bytes()  # a bad setting is reported before any work, not after it
    path, config, x01, t = _entry(clf, image, method, target, directory, params)
    if path.exists():
        hit = _load(path)
        if hit is not None:
            try:
                os.utime(path)  # recently used: evicted last
            except OSError:
                pass
            hit.meta["cached"] = True
            return hit
    result = explain(clf, x01, method, target=t, progress=progress, **dataclasses.asdict(config))
    if cap > 0:
        try:
            _save(path, result)
            evict(directory, cap)
        except OSError:  # a read-only or full disk only loses the cache, never the result
            pass
    result.meta["cached"] = False
    return result
