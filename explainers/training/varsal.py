"""Fitting VarSal's amortised encoder (paper 002, Section 3.3, Section 4.1, Appendix C).

    python -m explainers fit --explainer varsal --model shapes-resnet --data shapes \\
        --out assets/explainers/shapes-resnet [--set steps=600 --set lr=1e-3 ...]

The encoder q_θ(s | x) = N(μ_θ(x), diag ν_θ(x)) is trained on the classifier's training data by
minimising the negative ELBO of Eq. 5 with the reparameterisation trick (``s = μ + √ν ⊙ z``):
the KL likelihood of Eq. 2 through the SOFT top-k mask with k ~ U(hw/10, 9hw/10) and a random
baseline per sample, plus β · KL(q || soft-TV prior) in closed form (Eq. 7). The classifier stays
frozen (eval mode, no parameter gradients); only θ is updated.

Optimiser as Appendix C: Adam, weight decay 5e-4, betas (0.9, 0.99); learning rate 1e-4 by
default. Every ``eval_every`` steps the loss is measured on a fixed validation batch with fixed
draws (z, k, baselines), so evaluations are comparable, and the weights with the lowest validation
loss are written (the paper keeps "the network that has the lowest loss"). A checkpoint
(weights, optimiser, step, best loss) is saved every ``checkpoint_every`` steps; rerunning the same
command resumes from it. Every step's randomness comes from a generator seeded by (seed, step), so a
resumed run draws what an uninterrupted one would.

The committed fits (``assets/explainers/<model>/varsal.*``; the exact command is in each JSON card)
deviate from Appendix C, because each had to train in about 5 CPU minutes on one thread of a
shared 2-core machine (~650 steps of 32 images, about 3.5 epochs of the 6,000 shapes training
images, against the paper's 10 ImageNet epochs on a GPU):

- ``lr=3e-3`` with a cosine decay instead of a constant 1e-4: at 1e-4 the validation loss had
  barely moved after a few hundred steps; a constant 1e-3 learns but the validation loss jumps
  between evaluations; the decay settles it (on shapes-resnet: val likelihood 0.10 → 0.05 nats,
  mean-map maximum on the object for 65% → 82% of 60 test images).
- ``width=0.5`` (hidden channels 32, …, 8): the layer count and structure stay Appendix C's.
- ``stride=2`` (the first convolution has stride 2, the map is 32x32 for a 64x64 input, upsampled
  bilinearly) on the 64x64 shapes models: at full resolution and this budget the encoder learned
  edge-focused, noisy maps displaced by ~4 px (val likelihood 0.10 but the mean map's maximum on
  the object for only 38% of test images); a 2x2-pixel cell pools the gradient of four pixels and
  quarters the cost, so more steps fit the budget. The 28x28 digits models keep ``stride=1``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from ..batching import step_generator
from ..classifiers.base import Classifier
from ..config import knob, parse
from ..errors import ExplainerError
from ..fitted import Checkpoint, load_fitted, save_fitted, user_dir
from ..methods import softtv
from ..methods.varsal import (
    FIT_NAME, TRAINING_FIELDS, Encoder, EncoderConfig, VarSalConfig, baselines, draw_k, draw_kinds, likelihood,
)
from ..progress import report


@dataclass(frozen=True)
class TrainConfig:
    """Training options (``--set key=value``); Appendix C's values where it gives them.

    The objective's settings are VarSal's own (``method``, a :class:`VarSalConfig`): ``--set
    alpha=0.3`` is routed there by :func:`explainers.config.parse`. Only the objective's fields
    (``TRAINING_FIELDS``) apply to training; ``steps``, ``lr``, ``batch_size`` and ``seed`` are the
    trainer's own.
    """

    steps: int = knob(2000, "optimiser steps (the paper: 10 ImageNet epochs at batch 128 on a GPU; default 2000)",
                      min=1, step=50)
    batch_size: int = knob(32, "images per step (default 32)", min=1, step=1)
    lr: float = knob(1e-4, "Adam's learning rate (Appendix C: 1e-4)", min=0.0)
    weight_decay: float = knob(5e-4, "Adam's weight decay (Appendix C: 5e-4)", min=0.0)
    beta1: float = knob(0.9, "Adam's β1 (Appendix C: 0.9)", min=0.0, max=0.999, symbol="β1")
    beta2: float = knob(0.99, "Adam's β2 (Appendix C: 0.99)", min=0.0, max=0.999, symbol="β2")
    schedule: str = knob("constant", "learning rate: constant (the paper) or cosine (decays to 0 over steps)",
                         choices=("constant", "cosine"))
    width: float = knob(1.0, "multiplier of the encoder's hidden channel counts (Appendix C's list; default 1)",
                        min=0.01, max=4.0)
    stride: int = knob(1, "1 = saliency map at the input's resolution (the paper), 2 = half resolution",
                       choices=(1, 2, 4))
    method: VarSalConfig = field(default_factory=VarSalConfig)  # the objective (alpha, beta, baseline, ...)
    limit: Optional[int] = knob(None, "use only the first limit training images; auto = all", min=1, auto="auto")
    val_size: int = knob(128, "validation images (default 128)", min=1)
    eval_every: int = knob(50, "steps between validation losses (default 50)", min=1)
    checkpoint_every: int = knob(50, "steps between checkpoints (default 50)", min=1)
    seed: int = knob(0, "seeds the weights, the shuffling and every draw (default 0)", min=0)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "val_size", "eval_every", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ExplainerError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not (self.lr > 0 and self.weight_decay >= 0 and 0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ExplainerError("need lr > 0, weight_decay >= 0 and betas in [0, 1)")
        if self.schedule not in ("constant", "cosine"):
            raise ExplainerError(f"schedule must be constant or cosine, got {self.schedule!r}")
        if self.limit is not None and self.limit < 1:
            raise ExplainerError("limit must be at least 1")
        EncoderConfig(width=self.width, stride=self.stride)
        ignored = [f.name for f in dataclasses.fields(VarSalConfig)
                   if f.name not in TRAINING_FIELDS and getattr(self.method, f.name) != f.default]
        if ignored:
            raise ExplainerError(f"varsal fit: {', '.join(ignored)} is not a training option (the objective's are {', '.join(TRAINING_FIELDS)})")

    def flat(self) -> dict:
        """The options as one flat dict, the objective's fields in place of ``method`` (the layout of
        the checkpoints and the cards' ``command``)."""
        out = {}
        for f in dataclasses.fields(self):
            if f.name == "method":
                out.update({k: getattr(self.method, k) for k in TRAINING_FIELDS})
            else:
                out[f.name] = getattr(self, f.name)
        return out


def _tensors(source: str, split: str, clf: Classifier, limit: Optional[int]) -> tuple[torch.Tensor, str]:
    from ..data import load_dataset

    ds = load_dataset(source, split, limit=limit)
    if len(ds) == 0:
        raise ExplainerError(f"no images in {source} ({split})")
    x, _ = ds.arrays(size=tuple(clf.input_size))
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), ds.split


def _loss(enc: Encoder, clf: Classifier, x01: torch.Tensor, obj: VarSalConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, mean likelihood term, mean prior KL) for a batch: the negative ELBO of Eq. 5 (per image)."""
    B = x01.shape[0]
    with torch.no_grad():
        log_p = torch.log_softmax(clf.logits01(x01).float(), dim=1)
    mu, log_nu = enc(x01)
    h, w = mu.shape[-2:]
    z = torch.randn(mu.shape, generator=gen, device=gen.device).to(mu.device)
    k = draw_k(B, h * w, obj.k_min, obj.k_max, gen)
    with torch.no_grad():
        xbar = baselines(x01, draw_kinds(B, obj.baseline, gen), gen, obj.blur_sigma, obj.noise_std)
    s = mu + (0.5 * log_nu).exp() * z  # reparameterisation
    lik = likelihood(clf, x01, log_p, s, k, xbar, obj.topk_eps, obj.sinkhorn_iters).mean()
    kl = softtv.kl_to_prior(mu, log_nu, obj.alpha).mean()
    return lik + obj.beta_for(h, w) * kl, lik.detach(), kl.detach()


def fit(
    clf: Classifier,
    data: str,
    out_dir: Optional[str | Path] = None,
    progress: Optional[Callable] = None,
    **options,
) -> Path:
    """Train the encoder for ``clf`` on ``data`` (built-in name or image folder); returns the weights path."""

    cfg = parse(TrainConfig, options, owner="varsal fit")
    obj = cfg.method
    out = Path(out_dir) if out_dir else user_dir(clf.id)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{FIT_NAME}.safetensors"
    dev = clf.device

    xtr, _ = _tensors(data, "train", clf, cfg.limit)
    try:
        xva, vsplit = _tensors(data, "val", clf, cfg.val_size)
    except ExplainerError:
        vsplit = "all"
    if vsplit == "all":  # a folder without splits: hold out the last val_size training images
        n_val = min(cfg.val_size, max(1, len(xtr) // 5))
        xtr, xva = xtr[:-n_val], xtr[-n_val:]
    xva = xva[: cfg.val_size].float().div(255).to(dev)
    n = len(xtr)
    if n < 1:
        raise ExplainerError("not enough training images")

    enc_cfg = EncoderConfig(width=cfg.width, stride=cfg.stride)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # weight initialisation only; the global state is restored on exit
        enc = Encoder(enc_cfg)
    enc.to(dev)
    opt = torch.optim.Adam(enc.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2))
    ckpt = Checkpoint(out, FIT_NAME)
    start, best, history, seconds, cpu = 0, math.inf, [], 0.0, 0.0
    if ckpt.exists():
        start, extra = ckpt.load(enc, opt)
        if extra.get("train_config") != json.loads(json.dumps(cfg.flat())):
            raise ExplainerError(f"a checkpoint with other settings is in {out}; remove {ckpt.tensors.name} to start afresh")
        best, history, seconds, cpu = extra["best"], extra["history"], extra["seconds"], extra.get("cpu_seconds", 0.0)

    val_gen_seed = cfg.seed * 1_000_003 + 999_999_937

    def evaluate() -> tuple[float, float, float]:
        enc.eval()
        with torch.no_grad():
            loss, lik, kl = _loss(enc, clf, xva, obj, torch.Generator(device=dev).manual_seed(val_gen_seed))
        enc.train()
        return float(loss), float(lik), float(kl)

    def card(step: int) -> dict:
        defaults = TrainConfig().flat()
        sets = " ".join(f"--set {k}={v}" for k, v in cfg.flat().items() if v != defaults[k] and v is not None)
        return {
            "model": clf.id,
            "dataset": str(data),
            "input_size": list(clf.input_size),
            "step": step,
            "best_val_loss": best,
            "history": history,
            "seconds": round(seconds, 1),
            "cpu_seconds": round(cpu, 1),
            "torch_threads": torch.get_num_threads(),
            "command": f"python -m explainers fit --explainer varsal --model {clf.id} --data {data} --out {out} {sets}".strip(),
        }

    def config_dict() -> dict:
        # the card's layout since the first fits (what ``methods.varsal`` reads): every VarSalConfig
        # field and every training option flat, the trainer's steps/lr/batch_size/seed winning
        return {**dataclasses.asdict(obj), **cfg.flat(), "encoder": dataclasses.asdict(enc_cfg)}

    enc.train()
    t0 = time.perf_counter() - seconds
    c0 = time.process_time() - cpu
    step = start
    report(progress, step, cfg.steps, "VarSal encoder")
    for step in range(start, cfg.steps):
        gen = step_generator(cfg.seed, step, dev)
        if cfg.schedule == "cosine":  # a function of the step alone, so a resumed run gets the same rates
            for group in opt.param_groups:
                group["lr"] = cfg.lr * 0.5 * (1.0 + math.cos(math.pi * step / cfg.steps))
        epoch, pos = divmod(step * cfg.batch_size, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch))
        idx = perm[pos : pos + cfg.batch_size]
        if len(idx) < cfg.batch_size:  # wrap into the next epoch's order
            nxt = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch + 1))
            idx = torch.cat([idx, nxt[: cfg.batch_size - len(idx)]])
        x = xtr[idx].float().div(255).to(dev)
        loss, lik, kl = _loss(enc, clf, x, obj, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done = step + 1
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        msg = f"loss {float(loss.detach()):.3f} (KL {float(lik):.3f} nats, prior {float(kl):.0f})"
        if done % cfg.eval_every == 0 or done == cfg.steps:
            vloss, vlik, vkl = evaluate()
            history.append({"step": done, "val_loss": round(vloss, 5), "val_likelihood": round(vlik, 5), "val_prior_kl": round(vkl, 2), "seconds": round(seconds, 1)})
            if vloss < best:
                best = vloss
                save_fitted(weights, enc, config_dict(), **card(done))
            msg += f" · val {vloss:.3f} (best {best:.3f})"
        if done % cfg.checkpoint_every == 0 and done < cfg.steps:
            ckpt.save(enc, opt, done, best=best, history=history, seconds=seconds, cpu_seconds=cpu, train_config=cfg.flat())
        report(progress, done, cfg.steps, msg)
    if not weights.exists():  # steps already done by a previous run but nothing saved (cannot happen normally)
        save_fitted(weights, enc, config_dict(), **card(cfg.steps))
    else:  # refresh the card's history and time; the weights stay the best ones
        _, old = load_fitted(weights)
        old.update(history=history, seconds=round(seconds, 1), cpu_seconds=round(cpu, 1), steps_run=cfg.steps)
        weights.with_suffix(".json").write_text(json.dumps(old, indent=2, sort_keys=True, default=str))
    ckpt.remove()
    return weights
