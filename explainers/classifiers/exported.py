"""``torch.export`` files (``torch.export.save``, usually ``NAME.pt2``), from the server's own disk.

The exported program is unflattened (``torch.export.unflatten``) back into the module tree it was
exported from, so that methods which hook into layers (Grad-CAM) find them; the unflattened modules
are ``InterpreterModule``s, not ``Conv2d``, so only what a layer *outputs* tells what it is. When
unflattening fails or changes the logits, the flat graph (``ExportedProgram.module()``) is used and
``layers_hidden`` says why. The ``explainers`` metadata comes from an extra file ``explainers.json``
(``torch.export.save(..., extra_files={"explainers.json": ...})``) or a sidecar ``NAME.json``.

The program must accept any batch size (export with ``dynamic_shapes``): the methods forward
batches of perturbed images.
"""
from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import torch

from ..errors import ExplainerError, one_line
from .meta import META_NAME, _parse_meta, sidecar_meta


def zip_names(path: Path) -> list[str]:
    """The member names of a zip archive (TorchScript and torch.export files are zips); [] for anything else."""
    if not zipfile.is_zipfile(path):
        return []
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def is_exported(path: Path) -> bool:
    """A ``torch.export.save`` archive: a zip with ``data/weights`` or a serialized program, no TorchScript ``code/``."""
    names = zip_names(path)
    if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
        return False  # TorchScript
    return any("/models/" in n or "serialized_exported_program" in n or "/data/weights/" in n for n in names)


class _Flat(torch.nn.Module):
    """The flat exported graph, with ``train``/``eval`` made harmless (its mode is fixed at export)."""

    def __init__(self, gm: torch.nn.Module):
        super().__init__()
        self.gm = gm

    def forward(self, x):
        return self.gm(x)

    def train(self, mode: bool = True):  # the GraphModule refuses eval(): its mode was fixed at export
        self.training = mode
        return self


def _plain(module: torch.nn.Module) -> torch.nn.Module:
    """Drop the graphs' node metadata (fake tensors with symbolic shapes, kept for tracing only):
    with it the module cannot be deep-copied, which methods that hook a private copy need."""
    for m in module.modules():
        graph = getattr(m, "graph", None)
        if graph is not None and hasattr(graph, "nodes"):
            for node in graph.nodes:
                node.meta.clear()
    return module


def load(path: Path) -> tuple[torch.nn.Module, dict]:
    """(network, metadata) of a ``torch.export`` file; the network's ``layers_hidden`` attribute is ""
    when its module tree was restored, else one line saying why it was not."""
    extra = {META_NAME: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = torch.export.load(str(path), extra_files=extra)
    except Exception as e:  # noqa: BLE001 - a broken or foreign archive
        raise ExplainerError(f"{path.name}: not a loadable torch.export file ({one_line(e, 100)})") from None
    meta = _parse_meta(extra.get(META_NAME) or None, path.name) or sidecar_meta(path)
    flat = _Flat(_plain(ep.module()))
    why = ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = _plain(torch.export.unflatten(ep))
        size = meta.get("input_size", (224, 224))
        size = (size, size) if isinstance(size, int) else size
        x = torch.zeros(2, 3, *size)
        with torch.no_grad():
            same = torch.allclose(net(x), flat(x), atol=1e-5, rtol=1e-4)
        if not same:
            raise RuntimeError("the unflattened module's logits differ from the program's")
    except Exception as e:  # noqa: BLE001 - unflatten is best effort
        net, why = flat, f"torch.export.unflatten failed ({one_line(e, 80)}): the layers are one flat graph"
    if not why and not any(True for _ in net.named_children()):
        why = "the exported program keeps no module structure"
    net.layers_hidden = why
    return net, meta
