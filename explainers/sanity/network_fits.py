"""Methods whose map *is* a fit to the network (no per-image mode): fitted on the spot on every
network of a sanity check, into a temporary directory (see the package docstring)."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..classifiers.base import Classifier
from ..errors import ExplainerError

FIT_SAMPLES = 300  # images per on-the-spot fit (about 0.4 s for MIP-IN on shapes-resnet, one CPU thread)


@dataclass(frozen=True)
class NetworkFit:
    """How a method that needs a fit made on the very network it explains is fitted in a sanity
    check: ``fitter`` is its entry in ``explainers.training.FITTERS`` (called as
    ``fit(clf, data, out_dir, progress, **options)``), ``options(target, samples, seed)`` gives the
    fitter's options (one class, the first ``samples`` images, the seed), and ``param`` is the
    method parameter that takes the fitted file."""

    fitter: str
    options: Callable[[int, int, int], dict]
    param: str = "fit"


NETWORK_FITS: dict[str, NetworkFit] = {
    # Algorithm 1: one inverse network per target class; only the target's is needed
    "mipin": NetworkFit("mipin", lambda target, samples, seed: {"classes": str(int(target)), "limit": int(samples), "seed": int(seed)}),
}


def needs_network_fit(method: str) -> bool:
    """Whether the sanity check fits ``method`` on every network itself (see :class:`NetworkFits`)."""
    return method in NETWORK_FITS


class NetworkFits:
    """On-the-spot fits of one method (an entry of :data:`NETWORK_FITS`), one per (network, class),
    all made the same way: the first ``samples`` images of ``data`` (default: the classifier's
    built-in dataset, its train split), with ``seed``. They are written to a private temporary
    directory, never under the classifier's fits, and reused for the same classifier id and class;
    :meth:`close` (or leaving a ``with`` block, or garbage collection) removes the directory.

    ``params(clf, target)`` fits if needed and returns the method parameters that select the fit,
    to pass to :func:`explainers.explain` with ``clf``."""

    def __init__(self, method: str, samples: int = FIT_SAMPLES, seed: int = 0, data: Any = None):
        if method not in NETWORK_FITS:
            raise ExplainerError(f"{method} is fitted once per classifier, not per network in a sanity check")
        try:
            samples = int(samples)
        except (TypeError, ValueError):
            raise ExplainerError(f"fit_samples must be a whole number, got {samples!r}") from None
        if samples < 1:
            raise ExplainerError(f"fit_samples must be at least 1, got {samples}")
        self.method, self.spec = method, NETWORK_FITS[method]
        self.samples, self.seed, self.data = samples, int(seed), data
        self._dataset: Any = None
        self._paths: dict[tuple[str, int], Path] = {}
        self._tmp: Optional[tempfile.TemporaryDirectory] = None

    # the images are loaded once and shared by every network's fit
    def _data_for(self, clf: Classifier) -> Any:
        if self._dataset is None:
            data = self.data if self.data is not None else clf.dataset
            if data is None or (isinstance(data, str) and not data):
                raise ExplainerError(
                    f"the sanity check fits {self.method} on every randomised network, and {clf.id} has no built-in "
                    "dataset to fit on; pass fit_data= (a dataset name, an image folder or pixels (N, 3, H, W))")
            if isinstance(data, (str, Path)):
                from ..data import load_dataset

                data = load_dataset(data, "train", limit=self.samples)
            self._dataset = data
        return self._dataset

    def params(self, clf: Classifier, target: int, progress: Optional[Callable] = None) -> dict:
        key = (clf.id, int(target))
        if key not in self._paths:
            from ..training import get_fitter

            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="explainers-sanity-")
            out = Path(self._tmp.name) / f"fit{len(self._paths)}"
            fitter = get_fitter(self.spec.fitter)
            opts = self.spec.options(int(target), self.samples, self.seed)
            self._paths[key] = Path(fitter.fit(clf, self._data_for(clf), out, progress, **opts))
        return {self.spec.param: str(self._paths[key])}

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        self._paths.clear()

    def __enter__(self) -> "NetworkFits":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
