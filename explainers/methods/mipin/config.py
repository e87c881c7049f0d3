"""MIP-IN's knobs, :class:`MIPINConfig` (defaults: the paper's).

Its own module so that the fit lookup, the method and the completeness measure can all read it
without importing each other.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ...config import knob
from ...errors import ExplainerError


@dataclass(frozen=True)
class MIPINConfig:
    """MIP-IN's knobs (defaults: the paper's).

    - ``lam`` = 0.001: the ridge λ of the dense inverses (Eq. 6, Section 6.1.2). A λ other than the
      fitted one re-solves every dense (and global-pooling) inverse from the stored statistics.
    - ``forward_relu`` = True: gate the inverted signal where the forward activation is 0
      (Section 4.2). False gives the "global" signal of Fig. 3 (same fitted inverses, no gates).
    - ``data_free`` = True: with no fit, a classifier-module inversion whose only fitted stage is the
      top Linear layer (global pooling below it) uses the layer's minimum-norm inverse (``store.data_free_params``).
    - ``fit`` = None: path to a fitted ``mipin.safetensors``; None = the user's fit for the
      classifier (``$EXPLAINERS_HOME/fitted/<id>/``) if it has the class, else the committed one
      (``assets/explainers/<id>/``).

    The range (``min``) is the widgets'; ``__post_init__`` checks what is valid (λ in [0, 1e6]).
    """

    lam: float = knob(0.001, "λ, ridge of the dense inverses (Eq. 6; paper: 0.001); a λ other than the fitted one "
                      "re-solves them from the stored statistics", min=0.0, symbol="λ")
    forward_relu: bool = knob(True, "forward ReLU: zero the inverted signal where the forward activation is 0 "
                              "(Section 4.2; paper: on; off = the global signal of Fig. 3)")
    fit: Optional[str] = knob(None, "fitted inverses (.safetensors); empty = the classifier's fit",
                              auto="the classifier's fit", advanced=True)
    data_free: bool = knob(True, "without a fit, a network whose only fitted inverse would be its top Linear layer "
                           "(global pooling below it, e.g. an ImageNet network) uses that layer's minimum-norm inverse "
                           "w_c/‖w_c‖² (ours: isotropic features; default on)", advanced=True)

    def __post_init__(self) -> None:
        try:
            lam = float(self.lam)
        except (TypeError, ValueError):
            raise ExplainerError(f"mipin: lam must be a number, got {self.lam!r}") from None
        if not (math.isfinite(lam) and 0.0 <= lam <= 1e6):
            raise ExplainerError(f"mipin: lam must be a finite number in [0, 1e6], got {self.lam}")
        if not isinstance(self.forward_relu, bool):
            raise ExplainerError(f"mipin: forward_relu must be true or false, got {self.forward_relu!r}")
        if not isinstance(self.data_free, bool):
            raise ExplainerError(f"mipin: data_free must be true or false, got {self.data_free!r}")
        if self.fit is not None and not isinstance(self.fit, (str, Path)):
            raise ExplainerError(f"mipin: fit must be a path, got {self.fit!r}")
