"""The VarSal method: choose the fitted encoder or the per-image optimisation, and return the maps."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional

import torch

from ...classifiers.base import Classifier
from ...core import MethodOutput, MethodSpec, register
from ...errors import ExplainerError
from .config import OBJECTIVE_FIELDS, VarSalConfig
from .encoder import fitted_path, load_encoder, upsample
from .objective import fit_one_image


def _same_value(a, b) -> bool:
    if a is None or b is None or isinstance(a, str) or isinstance(b, str):
        return a == b
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)


def _choose(clf: Classifier, cfg: VarSalConfig) -> tuple[Optional[Path], str]:
    """(encoder path or None, one-line reason) for the mode the config asks for."""
    if cfg.mode == "per-image":
        return None, "per-image optimisation (asked for)"
    path = Path(cfg.encoder).expanduser() if cfg.encoder else fitted_path(clf)
    if path is None:
        if cfg.mode == "amortised":
            raise ExplainerError(
                f"no fitted VarSal encoder for {clf.id}; fit one with `python -m explainers fit --explainer varsal "
                f"--model {clf.id} --data SOURCE` or use mode=per-image"
            )
        return None, f"per-image optimisation (no fitted encoder for {clf.id})"
    _, card = load_encoder(path, clf.device)
    tc = card["config"]
    if card.get("model") not in (None, clf.id):
        raise ExplainerError(f"the VarSal encoder at {path} was fitted for {card.get('model')}, not {clf.id}")
    if tuple(card.get("input_size", clf.input_size)) != tuple(clf.input_size):
        raise ExplainerError(f"the VarSal encoder at {path} was fitted at {card.get('input_size')}, not {clf.input_size}")
    differs = [name for name in OBJECTIVE_FIELDS if not _same_value(getattr(cfg, name), tc.get(name))]
    if differs and cfg.mode == "auto":
        return None, f"per-image optimisation ({', '.join(differs)} differ from the encoder's training settings)"
    if differs:
        raise ExplainerError(
            "the VarSal encoder was trained with " + ", ".join(f"{k}={tc.get(k)}" for k in differs)
            + f"; {', '.join(differs)} differ: use mode=per-image or mode=auto"
        )
    return path, "amortised encoder (one forward pass)"


def run(clf: Classifier, x01: torch.Tensor, target: int, config: VarSalConfig, progress: Optional[Callable] = None) -> MethodOutput:
    """Posterior mean and standard deviation of the saliency map (maps ``mean`` and ``std``).

    VarSal explains the whole predictive distribution, not one class (Section 3.1): ``target``
    does not change the maps.
    """
    path, why = _choose(clf, config)
    H, W = clf.input_size
    meta: dict = {"amortised": path is not None, "how": why}
    if path is not None:
        enc, card = load_encoder(path, clf.device)
        with torch.inference_mode():
            mu, log_nu = enc(x01.to(clf.device))
        mu, log_nu = mu[0], log_nu[0]
        meta.update(
            encoder=str(path), grid=list(mu.shape), beta=config.beta_for(*mu.shape),
            encoder_width=card["config"]["encoder"]["width"], encoder_stride=card["config"]["encoder"].get("stride", 1),
        )
    else:
        mu, log_nu, info = fit_one_image(clf, x01, config, progress)
        meta.update(info)
    std = (0.5 * log_nu).exp()
    samples = None
    if config.n_samples:
        gen = torch.Generator(device=mu.device).manual_seed(int(config.seed) + 1)
        z = torch.randn((config.n_samples,) + tuple(mu.shape), generator=gen, device=mu.device)
        samples = mu + std * z
    # a coarser map (per-image grid, strided encoder) is upsampled bilinearly to the input size
    mu, std = upsample(mu[None], (H, W))[0], upsample(std[None], (H, W))[0]
    samples = upsample(samples, (H, W)) if samples is not None else None
    extras = {"samples": samples.detach().cpu().numpy()} if samples is not None else {}
    return MethodOutput(maps={"mean": mu.detach().cpu(), "std": std.detach().cpu()}, extras=extras, meta=meta)


register(
    MethodSpec(
        name="varsal",
        title="VarSal (variational saliency)",
        config=VarSalConfig,
        run=run,
        maps={"mean": "signed", "std": "positive"},
        units={"mean": "prior s.d.", "std": "prior s.d."},
        paper="002_41cd62fe8cab1855",
        needs_fit=True,
    )
)
