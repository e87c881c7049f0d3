"""Fitting the distribution controller's mask generator (paper 003, Eq. 4, Section 4, Appendix A.1).

    python -m explainers fit --explainer dcontrol --model shapes-resnet --data shapes \\
        --out assets/explainers/shapes-resnet [--set transformer=basic] [--set epochs=10 ...]

Two stages, as the paper's "two-stage scheme" (Section 4):

1. the feature filter's class embedding (Appendix A.1, Eq. 10) is pretrained for
   ``filter_steps`` steps: maximise ``mean sigmoid(X_ijᵀ C_c)`` for the classifier's predicted
   class ``c`` and minimise it for the other classes (``X`` = the deepest feature map);
2. the rest of the generator is trained with the classification loss only (Eq. 4):
   ``CE(f(I·M + A·(1 − M)), c)`` with ``M = upsample(C(G(F(I))))`` and ``c`` the classifier's
   predicted class ("no ground truth is introduced"); ``A`` is the blurred image half of the time
   and a random colour plus noise otherwise. Adam, ``lr`` = 1e-2 halved every ``halve_every`` = 3
   epochs, ``epochs`` = 10 (the paper's schedule; an epoch here is one pass over ``limit``
   training images, default all 6,000 shapes / 4,000 digits, batch 64).

After every epoch the loss is measured on ``val_size`` validation images with fixed backgrounds,
and the weights with the lowest validation loss are written as ``dcontrol-<transformer>.safetensors``
with the JSON card beside it (plan of feature taps, controller values, history, command).
Training state (weights, optimiser, step) is checkpointed every ``checkpoint_every`` steps to
``dcontrol-<transformer>.ckpt.safetensors``; running the same command again resumes from it.
Every step draws its randomness from a generator seeded by (seed, step), and the data order of an
epoch from (seed, epoch), so a resumed run draws what an uninterrupted one would.

Options (``--set key=value``, read by ``explainers.config.parse``): the objective's knobs are the
method's own (:class:`~explainers.methods.dcontrol.DControlConfig`, nested as ``method``):
``transformer`` (customised | basic), ``eta`` = 1.5, ``h`` = 2.5, ``p_blur`` = 0.5,
``blur_sigma`` = None (side/16), ``noise_std`` = 0.2; the fit's own: ``width`` = 32 (generator
channels), ``epochs`` = 10, ``batch_size`` = 64, ``lr`` = 0.01, ``halve_every`` = 3,
``filter_steps`` = 100, ``filter_lr`` = 0.01, ``limit`` = None (all), ``val_size`` = 128,
``checkpoint_every`` = 25, ``seed`` = 0, ``max_seconds`` = None (stop early, keeping the best
weights so far: for CPU budgets). The card's ``config`` and the checkpoint keep the flat names.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from ..batching import step_generator
from ..classifiers.base import Classifier
from ..config import knob, parse
from ..errors import ExplainerError
from ..methods import dcontrol as D
from ..methods.dcontrol import DControlConfig
from ..progress import report
from ..fitted import Checkpoint, load_fitted, save_fitted, user_dir

# the method's knobs that the training objective uses (Eq. 1, 4, 6; Section 4's backgrounds)
OBJECTIVE = ("transformer", "eta", "h", "p_blur", "blur_sigma", "noise_std")
# the flat option names, in the order of the card's command line
FLAT = ("transformer", "eta", "h", "width", "epochs", "batch_size", "lr", "halve_every", "filter_steps", "filter_lr",
        "limit", "val_size", "p_blur", "blur_sigma", "noise_std", "checkpoint_every", "seed", "max_seconds")


@dataclass(frozen=True)
class FitOptions:
    """The fit's options (see the module docstring); ``method`` holds the objective's knobs."""

    method: DControlConfig = field(default_factory=DControlConfig, metadata={
        "help": "the method's knobs the objective uses: transformer, eta, h, p_blur, blur_sigma, noise_std"})
    width: int = knob(32, "channels of the mask generator (default 32)", min=1, max=256, step=1)
    epochs: int = knob(10, "passes over the training images (paper: 10)", min=1, max=100, step=1)
    batch_size: int = knob(64, "images per step (paper: 64)", min=1, max=512, step=1)
    lr: float = knob(0.01, "Adam learning rate (paper: 1e-2)", min=1e-5, max=1.0)
    halve_every: int = knob(3, "epochs between halvings of the learning rate (paper: 3)", min=1, max=100, step=1)
    filter_steps: int = knob(100, "steps pretraining the feature filter's class embedding C (Appendix A.1; default 100)",
                             min=0, max=10_000, step=10)
    filter_lr: float = knob(0.01, "Adam learning rate of the class embedding (default 1e-2)", min=1e-5, max=1.0)
    limit: Optional[int] = knob(None, "at most this many training images; empty = all", min=1, auto="all")
    val_size: int = knob(128, "validation images, measured after every epoch (default 128)", min=1, max=10_000, step=1)
    checkpoint_every: int = knob(25, "steps between checkpoints (default 25)", min=1, step=1, advanced=True)
    seed: int = knob(0, "seed of the initialisation, data order and backgrounds (default 0)", min=0, step=1)
    max_seconds: Optional[float] = knob(None, "stop after this many seconds, keeping the best weights; empty = no limit",
                                        auto="no limit", advanced=True)

    def __post_init__(self) -> None:
        if not isinstance(self.method, DControlConfig):
            raise ExplainerError(f"dcontrol fit: method must be a DControlConfig, got {self.method!r}")
        default = DControlConfig()
        for f in dataclasses.fields(DControlConfig):
            if f.name not in OBJECTIVE and getattr(self.method, f.name) != getattr(default, f.name):
                raise ExplainerError(f"dcontrol fit: {f.name} is a setting of the explanation, not of the fit")
        for name in ("width", "epochs", "batch_size", "halve_every", "val_size", "checkpoint_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ExplainerError(f"dcontrol fit: {name} must be an integer >= 1, got {v!r}")
        if not isinstance(self.filter_steps, int) or self.filter_steps < 0:
            raise ExplainerError(f"dcontrol fit: filter_steps must be an integer >= 0, got {self.filter_steps!r}")
        for name in ("lr", "filter_lr"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ExplainerError(f"dcontrol fit: {name} must be a positive number, got {v!r}")
        if self.limit is not None and self.limit < 1:
            raise ExplainerError("dcontrol fit: limit must be at least 1")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ExplainerError("dcontrol fit: max_seconds must be > 0")

    def flat(self) -> dict[str, Any]:
        """The options under their flat names (as cards and checkpoints store them)."""
        return {k: getattr(self.method if k in OBJECTIVE else self, k) for k in FLAT}


def _tensors(source, split: str, clf: Classifier, limit: Optional[int]) -> tuple[torch.Tensor, str]:
    from ..data import load_dataset

    if isinstance(source, torch.Tensor):  # pixel tensors (N, 3, H, W) in [0, 1] (tests)
        return (source[:limit] if limit else source).float(), "tensor"
    ds = load_dataset(source, split, limit=limit)
    if len(ds) == 0:
        raise ExplainerError(f"dcontrol fit: no images in {source} ({split})")
    x, _ = ds.arrays(size=tuple(clf.input_size))
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().float().div_(255), ds.split


def mask_loss(gen: D.MaskGenerator, clf: Classifier, x: torch.Tensor, cfg: DControlConfig, rng: torch.Generator) -> torch.Tensor:
    """Eq. 4 for a batch: CE of the classifier on ``φ(I, M)`` against its own predicted class
    (the controller and backgrounds from the method's knobs ``cfg``)."""
    with torch.no_grad():
        feats, logits = D.capture(clf, x, gen.plan)
        feats = {k: v.detach() for k, v in feats.items()}
        c = logits.argmax(1)
        a = D.backgrounds(x, rng, cfg.p_blur, cfg.blur_sigma, cfg.noise_std)
    img = D.generator_image(clf, x) if gen.plan["mode"] == "vector" else None
    z = D.instance_normalise(gen(feats, c, img))
    m = D.upsample(D.apply_controller(z, cfg.transformer, cfg.eta, cfg.h), clf.input_size)
    return F.cross_entropy(clf.logits01(D.composite(x, m, a)).float(), c)


def filter_loss(gen: D.MaskGenerator, clf: Classifier, x: torch.Tensor) -> torch.Tensor:
    """Appendix A.1's objective for the class embedding, on the deepest features (or the vector)."""
    with torch.no_grad():
        feats, logits = D.capture(clf, x, gen.plan)
        c = logits.argmax(1)
    plan = gen.plan
    key = plan["taps"][0]["name"] if plan["mode"] == "conv" else plan["vector"]["name"]
    return gen.filter.pretrain_loss(feats[key].detach().float(), c)


def _stage_params(gen: D.MaskGenerator, stage: str) -> list[torch.nn.Parameter]:
    if stage == "filter":
        return [gen.filter.embedding]
    return [p for n, p in gen.named_parameters() if not n.startswith("filter.")]


def fit(
    clf: Classifier,
    data,
    out_dir: Optional[str | Path] = None,
    progress: Optional[Callable] = None,
    **options,
) -> Path:
    """Train the mask generator for ``clf`` on ``data`` (a built-in dataset name, an image folder,
    or a pixel tensor); returns the weights path."""
    opts = parse(FitOptions, options, owner="dcontrol fit")
    out = Path(out_dir) if out_dir else user_dir(clf.id)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{D.FIT_NAME}-{opts.method.transformer}"
    weights = out / f"{name}.safetensors"
    dev = clf.device

    xtr, _ = _tensors(data, "train", clf, opts.limit)
    if isinstance(data, torch.Tensor):
        vsplit = "all"
    else:
        try:
            xva, vsplit = _tensors(data, "val", clf, opts.val_size)
        except ExplainerError:
            vsplit = "all"
    if vsplit == "all":  # no validation split: hold out the last images
        n_val = min(opts.val_size, max(1, len(xtr) // 5))
        xtr, xva = xtr[:-n_val], xtr[-n_val:]
    xva = xva[: opts.val_size].to(dev)
    n = len(xtr)
    if n < 1:
        raise ExplainerError("dcontrol fit: not enough training images")

    plan = D.probe_plan(clf, width=opts.width)
    gen = D.init_generator(D.MaskGenerator(plan), opts.seed).to(dev)
    per_epoch = max(1, math.ceil(n / opts.batch_size))
    total = opts.filter_steps + opts.epochs * per_epoch
    ckpt = Checkpoint(out, name)
    step, best, history, seconds = 0, math.inf, [], 0.0
    stage = "filter" if opts.filter_steps > 0 else "main"
    if ckpt.exists():
        extra = json.loads(ckpt.meta.read_text()).get("extra", {})
        same = {k: v for k, v in json.loads(json.dumps(opts.flat())).items() if k != "max_seconds"}
        if {k: v for k, v in extra.get("options", {}).items() if k != "max_seconds"} != same or extra.get("plan") != plan:
            raise ExplainerError(f"dcontrol fit: a checkpoint with other settings is in {out}; remove {ckpt.tensors.name} to start afresh")
        stage = extra["stage"]
    opt = torch.optim.Adam(_stage_params(gen, stage), lr=opts.filter_lr if stage == "filter" else opts.lr)
    if ckpt.exists():
        step, extra = ckpt.load(gen, opt)
        best, history, seconds = extra["best"], extra["history"], extra["seconds"]

    val_seed = opts.seed * 1_000_003 + 999_999_937

    def evaluate() -> float:
        gen.eval()
        with torch.no_grad():
            rng = torch.Generator(device=dev).manual_seed(val_seed)
            losses = [float(mask_loss(gen, clf, xva[i : i + opts.batch_size], opts.method, rng)) * len(xva[i : i + opts.batch_size]) for i in range(0, len(xva), opts.batch_size)]
        gen.train()
        return sum(losses) / len(xva)

    def card(done: int) -> dict:
        default = FitOptions().flat()
        sets = " ".join(f"--set {k}={v}" for k, v in opts.flat().items() if v != default[k])
        return {
            "model": clf.id,
            "dataset": str(data) if not isinstance(data, torch.Tensor) else "tensor",
            "input_size": list(clf.input_size),
            "plan": plan,
            "step": done,
            "steps": total,
            "best_val_loss": best,
            "history": history,
            "seconds": round(seconds, 1),
            "torch_threads": torch.get_num_threads(),
            "command": f"python -m explainers fit --explainer dcontrol --model {clf.id} --data {data} --out {out} {sets}".strip(),
        }

    def batch(i: int) -> torch.Tensor:
        if i < opts.filter_steps:
            epoch, pos = -1, i * opts.batch_size % n
        else:
            epoch, k = divmod(i - opts.filter_steps, per_epoch)
            pos = k * opts.batch_size
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(opts.seed * 7919 + epoch + 17))
        idx = perm[pos : pos + opts.batch_size]
        if len(idx) < opts.batch_size and i < opts.filter_steps:
            idx = torch.cat([idx, perm[: opts.batch_size - len(idx)]])
        return xtr[idx].to(dev)

    gen.train()
    t0 = time.perf_counter() - seconds
    report(progress, step, total, "dcontrol generator")
    stopped_early = False
    while step < total:
        if step == opts.filter_steps and stage == "filter":
            stage = "main"
            opt = torch.optim.Adam(_stage_params(gen, stage), lr=opts.lr)
        x = batch(step)
        if stage == "filter":
            loss = filter_loss(gen, clf, x)
            msg = f"filter {float(loss.detach()):.3f}"
        else:
            epoch = (step - opts.filter_steps) // per_epoch
            for g in opt.param_groups:
                g["lr"] = opts.lr * 0.5 ** (epoch // opts.halve_every)
            loss = mask_loss(gen, clf, x, opts.method, step_generator(opts.seed, step, dev))
            msg = f"epoch {epoch + 1}/{opts.epochs} CE {float(loss.detach()):.3f}"
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        seconds = time.perf_counter() - t0
        end_of_epoch = stage == "main" and (step - opts.filter_steps) % per_epoch == 0
        out_of_time = opts.max_seconds is not None and seconds >= opts.max_seconds and stage == "main"
        if end_of_epoch or step == total or out_of_time:
            vloss = evaluate()
            history.append({"step": step, "epoch": round((step - opts.filter_steps) / per_epoch, 3), "val_ce": round(vloss, 5), "seconds": round(seconds, 1)})
            if vloss < best:
                best = vloss
                save_fitted(weights, gen, opts.flat(), **card(step))
            msg += f" · val {vloss:.3f} (best {best:.3f})"
        if step % opts.checkpoint_every == 0 and step < total:
            ckpt.save(gen, opt, step, best=best, history=history, seconds=seconds, stage=stage,
                      options=opts.flat(), plan=plan)
        report(progress, step, total, msg)
        if out_of_time and step < total:
            stopped_early = True  # keep a checkpoint: the same command with a larger max_seconds goes on
            ckpt.save(gen, opt, step, best=best, history=history, seconds=seconds, stage=stage,
                      options=opts.flat(), plan=plan)
            break
    if not weights.exists():
        save_fitted(weights, gen, opts.flat(), **card(step))
    else:  # refresh the card's history and time; the weights stay the best ones
        _, old = load_fitted(weights)
        old.update(history=history, seconds=round(seconds, 1), steps_run=step, stopped_early=stopped_early)
        weights.with_suffix(".json").write_text(json.dumps(old, indent=2, sort_keys=True, default=str))
    if not stopped_early:
        ckpt.remove()
    return weights
