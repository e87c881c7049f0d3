"""The method's knobs, :class:`DControlConfig` (defaults: the paper's where it gives them).

Its own module so that the per-image optimisation, the generator lookup and the method (and the
fitter, which nests it) can all read it without importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ...config import knob
from ...errors import ExplainerError
from .controller import TRANSFORMERS, _positive, check_eta_h, check_transformer

GENERATORS = ("auto", "fitted", "optimise")


@dataclass(frozen=True)
class DControlConfig:
    """The distribution controller's knobs.

    - ``transformer`` = "customised": ``sigmoid(η z)^h`` (Eq. 6) or "basic": ``ReLU(z)`` (Eq. 5);
      picks the fitted generator ``dcontrol-<transformer>``.
    - ``eta`` = 1.5, ``h`` = 2.5: the customised transformer's η and h (Section 3.2.3). The
      controller is applied with these values; a fitted generator was trained with the values
      in its JSON (``meta["trained_eta"]``, ``meta["trained_h"]``).
    - ``generator`` = "auto": the fitted generator when there is one, else the per-image
      optimisation; "fitted" requires a fit; "optimise" always optimises a free coarse map.
    - ``fit`` = None: path to a fitted ``.safetensors`` (None = the classifier's fit for the
      transformer: the user's folder first, then ``assets/explainers/<id>/``).
    - ``finetune_samples`` = 64: evenly spaced numbers of kept pixels at which ``q_i`` is
      evaluated (Section 3.3), linear interpolation in between.
    - ``finetune_sigma`` = None: blur σ (px) of the fine-tuning's reference (None = side/16).
    - ``iterations`` = 300, ``lr`` = 0.1, ``backgrounds`` = 4: the per-image optimisation
      (Adam steps, learning rate, random backgrounds per step, half of them blurred: stratified).
    - ``blur_sigma`` = None (side/16), ``noise_std`` = 0.2, ``p_blur`` = 0.5: the random
      backgrounds A of the per-image optimisation, as in training (the objective's knobs, which
      the fitter shares by nesting this config).
    - ``delete`` = 1: weight of the per-image optimisation's deletion term (ours, see ``optimise``;
      0 = Eq. 4's loss alone); not a knob of the fit (the generator is trained with Eq. 4 only).
    - ``batch_size`` = 64: images per classifier forward when fine-tuning (halved on CUDA OOM).
    - ``seed`` = 0: the per-image optimisation's initial map and backgrounds.

    The ranges (``min``/``max``) are the widgets'; ``__post_init__`` checks what is valid.
    """

    transformer: str = knob("customised", "controller: customised sigmoid(η z)^h (Eq. 6) or basic ReLU(z) (Eq. 5); "
                            "picks the fit dcontrol-<transformer> (default customised)", choices=TRANSFORMERS)
    eta: float = knob(1.5, "η, steepness of the customised transformer sigmoid(η z)^h (Eq. 6; paper: 1.5)",
                      min=0.1, max=5.0, step=0.05, symbol="η")
    h: float = knob(2.5, "h, power of the customised transformer sigmoid(η z)^h (Eq. 6; paper: 2.5)",
                    min=0.2, max=6.0, step=0.1, symbol="h")
    generator: str = knob("auto", "fitted generator, per-image optimisation, or auto (the fit if there is one; default auto)",
                          choices=GENERATORS)
    fit: Optional[str] = knob(None, "fitted generator (.safetensors); empty = the classifier's fit",
                              auto="the classifier's fit", advanced=True)
    finetune_samples: int = knob(64, "numbers of kept pixels i where q_i is evaluated, linear in between (Section 3.3; default 64)",
                                 min=1, max=1024, step=1, advanced=True)
    finetune_sigma: Optional[float] = knob(None, "blur σ of the fine-tuning reference (px); empty = side/16",
                                           min=0.0, auto="side/16", symbol="σ", advanced=True)
    iterations: int = knob(300, "Adam steps of the per-image optimisation (as the paper's per-image MP, Appendix A.2: 300)",
                           min=0, max=2000, step=10)
    lr: float = knob(0.1, "learning rate of the per-image optimisation (Appendix A.2: 0.1)",
                     min=0.001, max=1.0, step=0.005)
    backgrounds: int = knob(4, "random backgrounds A per optimisation step, half of them blurred (default 4)",
                            min=1, max=64, step=1)
    blur_sigma: Optional[float] = knob(None, "blur σ of the backgrounds A (px); empty = side/16 (paper: 'variance 10' at 224 px)",
                                       min=0.0, auto="side/16", symbol="σ", advanced=True)
    noise_std: float = knob(0.2, "s.d. of the noise on random-colour backgrounds A (the paper gives none; default 0.2)",
                            min=0.0, max=1.0, step=0.05, advanced=True)
    p_blur: float = knob(0.5, "probability that a background A is the blurred image (Section 4: half the time; 0.5)",
                         min=0.0, max=1.0, step=0.05, advanced=True)
    delete: float = knob(1.0, "per-image only (ours, the paper has no per-image objective): weight of the deletion "
                         "term −log(1 − p_c(φ(I, 1 − M))), which asks that the image with the mask's region replaced "
                         "lose the class; 0 = Eq. 4's preservation loss only (default 1)", min=0.0, max=10.0, step=0.1,
                         advanced=True)
    batch_size: int = knob(64, "images per classifier forward when fine-tuning (halved on CUDA OOM; default 64)",
                           min=1, max=512, step=1, advanced=True)
    seed: int = knob(0, "seed of the per-image optimisation's initial map and backgrounds (default 0)", min=0, step=1)

    def __post_init__(self) -> None:
        check_transformer(self.transformer)
        if self.generator not in GENERATORS:
            raise ExplainerError(f"dcontrol: generator must be one of {', '.join(GENERATORS)}, got {self.generator!r}")
        check_eta_h(self.eta, self.h)
        _int_at_least("finetune_samples", self.finetune_samples, 1)
        _int_at_least("iterations", self.iterations, 0)
        _int_at_least("backgrounds", self.backgrounds, 1)
        _int_at_least("batch_size", self.batch_size, 1)
        _int_at_least("seed", self.seed, 0)
        _positive("lr", self.lr)
        for name in ("finetune_sigma", "blur_sigma"):
            v = getattr(self, name)
            if v is not None:
                _positive(name, v, allow_zero=True)
        _positive("noise_std", self.noise_std, allow_zero=True)
        _positive("delete", self.delete, allow_zero=True)
        if not (isinstance(self.p_blur, (int, float)) and 0.0 <= float(self.p_blur) <= 1.0):
            raise ExplainerError(f"dcontrol: p_blur must be in [0, 1], got {self.p_blur!r}")
        if self.fit is not None and not isinstance(self.fit, (str, Path)):
            raise ExplainerError(f"dcontrol: fit must be a path, got {self.fit!r}")


def _int_at_least(name: str, v: Any, lo: int) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < lo:
        raise ExplainerError(f"dcontrol: {name} must be an integer >= {lo}, got {v!r}")
