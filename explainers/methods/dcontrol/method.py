"""The ``dcontrol`` method: ``mask`` (Eq. 4) from the fitted generator or the per-image
optimisation, then ``mask_finetuned`` (Section 3.3); registers into core once, on import.

``meta["amortised"]`` says which generator was used; ``meta["trained_targets"]`` which classes a
fitted generator was trained for ("predicted" only, or "top-k": class-selective, issue 18).
``extras`` keep the coarse ``z``, the per-pixel ``v`` and the fine-tuning curve, so a page can
re-apply the controller with other η, h (``masks_from_z``) without another forward.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch

from ...classifiers.base import Classifier
from ...core import MethodOutput, MethodSpec, register
from ...progress import report
from ..references import blur as _blur
from .config import DControlConfig
from .controller import apply_controller, upsample
from .finetune import finetune
from .generator import MaskGenerator, generator_z
from .optimise import optimise_z
from .store import choose_generator


def fitted_mask(gen: MaskGenerator, clf: Classifier, x01: torch.Tensor, target: int, transformer: str, eta: float, h: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z, M)`` for one image from a fitted generator: Eq. 4 without the loss."""
    cls = torch.full((x01.shape[0],), int(target), device=x01.device, dtype=torch.long)
    with torch.no_grad():
        z, _ = generator_z(gen, clf, x01, cls)
        m = upsample(apply_controller(z, transformer, eta, h), clf.input_size)
    return z, m


def run(clf: Classifier, x01: torch.Tensor, target: int, config: DControlConfig, progress: Optional[Callable] = None) -> MethodOutput:
    """Maps ``mask`` (Eq. 4) and ``mask_finetuned`` (Section 3.3) for ``target``."""
    cfg = config
    chosen = choose_generator(clf, cfg)
    meta: dict[str, Any] = {"amortised": chosen is not None, "transformer": cfg.transformer, "eta": cfg.eta, "h": cfg.h}
    extras: dict[str, Any] = {}
    if chosen is not None:
        gen, card, path = chosen
        z, m = fitted_mask(gen, clf, x01, target, cfg.transformer, cfg.eta, cfg.h)
        tc = card.get("config", {})
        meta.update(
            generator=str(path),
            trained_transformer=tc.get("transformer"),
            trained_eta=tc.get("eta"),
            trained_h=tc.get("h"),
            trained_on=card.get("dataset"),
            trained_targets=tc.get("targets", "predicted"),  # "top-k": trained on other classes too (class-selective)
            fit_command=card.get("command"),
        )
    else:
        z, losses = optimise_z(clf, x01, target, cfg, progress)
        m = upsample(apply_controller(z, cfg.transformer, cfg.eta, cfg.h), clf.input_size)
        meta.update(generator="per-image optimisation", trained_transformer=cfg.transformer, trained_eta=cfg.eta, trained_h=cfg.h,
                    iterations=cfg.iterations, delete=cfg.delete, final_loss=losses[-1] if losses else None)
        extras["loss"] = np.asarray(losses, dtype=np.float32)
    report(progress, 0, 1, "fine-tuning")
    ref = _blur(x01, cfg.finetune_sigma if cfg.finetune_sigma is not None else min(clf.input_size) / 16.0)
    tiebreak = upsample(z, clf.input_size)[0, 0]
    ft = finetune(clf, x01, m[0, 0], target, cfg.finetune_samples, ref, tiebreak, cfg.batch_size)
    report(progress, 1, 1, "fine-tuned")
    extras.update(
        z=z[0, 0].cpu().numpy().astype(np.float32),
        v=ft["v"].cpu().numpy().astype(np.float32),
        finetune_fraction=(ft["counts"] / float(m.shape[-1] * m.shape[-2])).astype(np.float32),
        finetune_q=ft["q"].astype(np.float32),
        finetune_q_monotone=ft["q_monotone"].astype(np.float32),
    )
    meta.update(coarse_size=list(z.shape[-2:]), q_max=float(ft["q_monotone"][-1]), q_reference=float(ft["q"][0]))
    return MethodOutput(maps={"mask": m[0, 0], "mask_finetuned": ft["mask_finetuned"]}, extras=extras, meta=meta)


register(
    MethodSpec(
        name="dcontrol",
        title="Distribution controller (mask predictor)",
        config=DControlConfig,
        run=run,
        maps={"mask": "mask", "mask_finetuned": "mask"},
        units={"mask": "relevance", "mask_finetuned": "relevance × probability"},
        paper="003_b67efb941534cde0",
        needs_fit=True,
    )
)
