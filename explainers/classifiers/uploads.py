"""Checkpoints uploaded through the browser: safetensors weights for a listed architecture.

Only safetensors (tensors and a JSON header, nothing that runs) is accepted this way; formats that
carry code (TorchScript, ``.pt2``, pickles) come only from the server's own disk. An upload is
checked before use: its size (``$EXPLAINERS_UPLOAD_MAX_MB``, default 500), that it is safetensors,
and that its shapes fit the architecture, a torchvision classification model (any class count) or
a models-folder network. Its id, ``upload-<arch>-<digest>``, holds the digest of its bytes, so
every cache keyed on the id (and the weights' digest) tells two uploads apart.

The bytes live in this process's memory (the last ``KEEP`` uploads); the app keeps them in the
browser session and registers them again on every run, so an upload lives as long as the session.
"""
from __future__ import annotations

import hashlib
import os
import re
import struct
import threading
from collections import OrderedDict
from typing import Optional

import torch

from ..errors import ExplainerError, one_line
from .base import Classifier

PREFIX = "upload-"
MAX_MB_ENV = "EXPLAINERS_UPLOAD_MAX_MB"
DEFAULT_MAX_MB = 500
KEEP = 8
_STORE: "OrderedDict[str, tuple[bytes, str, str]]" = OrderedDict()  # id -> (bytes, arch, file name)
_LOCK = threading.Lock()


def max_bytes() -> int:
    try:
        return int(float(os.environ.get(MAX_MB_ENV, DEFAULT_MAX_MB)) * 1e6)
    except ValueError:
        return int(DEFAULT_MAX_MB * 1e6)


def is_upload(model_id: str) -> bool:
    return model_id.startswith(PREFIX)


def architectures() -> list[str]:
    """What an upload may be loaded into: the models folder's networks, then torchvision's classifiers."""
    from . import models_folder
    from .user import _classification_models

    own = [e.id for e in models_folder.entries(set()) if e.available and models_folder._scan()[e.id]["kind"] == "code"]
    return own + _classification_models()


def check_bytes(data: bytes, name: str) -> None:
    """Size cap and the safetensors layout (8-byte header length, then a JSON object), one line each."""
    cap = max_bytes()
    if len(data) > cap:
        raise ExplainerError(f"{name}: {len(data) / 1e6:.0f} MB is over the upload limit of {cap / 1e6:.0f} MB "
                             f"(set {MAX_MB_ENV}, or load it from the server's disk with --model PATH)")
    if len(data) < 10 or data[8:9] != b"{" or not 0 < struct.unpack("<Q", data[:8])[0] < len(data):
        kind = "a zip (TorchScript, .pt2 or torch.save)" if data[:2] == b"PK" else "a pickle" if data[:1] == b"\x80" else "not safetensors"
        raise ExplainerError(f"{name}: only safetensors weights can be uploaded, this is {kind}; files that carry code "
                             "are read only from the server's disk (the models folder or --model PATH)")


def register(data: bytes, arch: str, name: str = "upload.safetensors") -> str:
    """Keep an upload in memory and return its classifier id (checks size and format, not shapes)."""
    check_bytes(data, name)
    digest = hashlib.sha256(data).hexdigest()[:12]
    model_id = f"{PREFIX}{re.sub(r'[^A-Za-z0-9_.]+', '_', arch)}-{digest}"
    with _LOCK:
        _STORE[model_id] = (data, arch, name)
        _STORE.move_to_end(model_id)
        while len(_STORE) > KEEP:
            _STORE.popitem(last=False)
    return model_id


def keep(model_id: str, data: bytes, arch: str, name: str) -> None:
    """Hold an upload registered before (the app's session keeps its bytes; this process may have
    dropped them) without hashing it again."""
    with _LOCK:
        if model_id not in _STORE:
            _STORE[model_id] = (data, arch, name)
            while len(_STORE) > KEEP:
                _STORE.popitem(last=False)


def title(model_id: str) -> str:
    with _LOCK:
        got = _STORE.get(model_id)
    return f"{got[2]} ({got[1]}, uploaded)" if got else model_id


def load(model_id: str, device: torch.device, labels: Optional[list[str]] = None) -> Classifier:
    """Build the upload's architecture and load its weights (one line when they do not fit)."""
    from safetensors.torch import load as load_bytes

    from . import models_folder
    from .user import _build, _parse_meta, _probe, _unwrap, make_classifier, META_KEY

    with _LOCK:
        got = _STORE.get(model_id)
    if got is None:
        raise ExplainerError(f"{model_id}: this upload is no longer held by the server; upload the file again")
    data, arch, name = got
    try:
        state = load_bytes(data)
        header = data[8 : 8 + struct.unpack("<Q", data[:8])[0]]
        import json

        meta = _parse_meta((json.loads(header).get("__metadata__") or {}).get(META_KEY), name)
    except ExplainerError:
        raise
    except Exception as e:  # noqa: BLE001 - a truncated or forged header
        raise ExplainerError(f"{name}: not a readable safetensors file ({one_line(e, 80)})") from None
    state = _unwrap(state, name)
    info = {"title": f"{name} ({arch}, uploaded)", "kind": "upload", "arch": arch, "file": name}
    if models_folder.is_known(arch):
        net, code_meta, _ = models_folder.build_net(arch)
        models_folder.load_state(net, state, arch, name)
        meta = {**meta, **code_meta}
        net.eval()
        n = _probe(net, meta.get("input_size", (224, 224)), name, batch=2)
    else:
        net, n = _build(arch, state, name)
    return make_classifier(model_id, net, n, meta, labels, device, info)
