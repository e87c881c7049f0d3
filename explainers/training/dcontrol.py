"""Fitting the distribution controller's mask generator (paper 003, Eq. 4, Section 4, Appendix A.1).

    python -m explainers fit --explainer dcontrol --model shapes-resnet --data shapes \\
        --out assets/explainers/shapes-resnet [--set transformer=basic] [--set epochs=10 ...]

Two stages, as the paper's "two-stage scheme" (Section 4):

1. the feature filter's class embedding ``C`` (Appendix A.1, Eq. 10, ``Y_ij = X_ij·sigmoid(X_ijᵀ C_s)``
   on the deepest feature map ``X``) is pretrained alone for ``filter_steps`` steps: maximise
   ``mean_ij sigmoid(X_ijᵀ C_c)`` for the classifier's predicted class ``c`` and minimise it for
   the other classes (their mean). The paper pretrains on 250,000 images; the fits before
   issue 18 took 100 steps of 32 images, the default is now 400 (about two passes over shapes).
   The card's ``filter_separation`` gives the mean sigmoid on the validation images for the
   predicted class, the runner-up and the others: 0.66 / 0.42 / 0.30 on shapes-resnet,
   0.75 / 0.36 / 0.30 on shapes-vgg, 0.59 / 0.50 / 0.47 on digits-cnn (a linear score on 7×7×32
   features separates digits weakly; 100 steps gave nearly the same). The filter alone does not
   make the masks depend on the class: the generator has to be trained on other classes too;
2. the rest of the generator is trained with the classification loss only (Eq. 4):
   ``CE(f(I·M + A·(1 − M)), c)`` with ``M = upsample(C(G(F(I))))`` ("no ground truth is
   introduced"); ``A`` is the blurred image half of the time and a random colour plus noise
   otherwise. ``C`` stays frozen (``filter_lr_main`` = 0) unless asked. Adam, ``lr`` = 1e-2 halved
   every ``halve_every`` = 3 epochs, ``epochs`` = 10 (the paper's schedule; an epoch here is one
   pass over ``limit`` training images, default all 6,000 shapes / 4,000 digits, batch 64).

The class ``c`` of stage 2 (``targets``). A generator trained on the predicted class only never
sees the filter switched to another class, so it learns to ignore the class: the mask for the
runner-up class of an image correlated with the top-1 mask at Spearman ρ = 0.86 (shapes-resnet)
and 0.95 (shapes-vgg) with the fits before issue 18. The paper's filter follows Dabkowski & Gal,
who train the class selector on noisy labels; here (``top-k``, the default) each image is trained
for its predicted class with probability ``p_predicted`` = 0.75 and otherwise for a class drawn
uniformly from the classifier's ranks 2..``top_k`` (3). Why this and not the alternatives
(measured with ``scripts/dcontrol_selectivity.py`` on 200 shapes test images):

- most targets stay the predicted class, so the top-1 masks keep their training signal, and the
  weights kept are those with the lowest validation loss for the predicted class. With
  ``p_predicted`` = 0.5 shapes-vgg's top-1 masks got worse (pointing 0.57, top-10% blur drop 0.28
  against 0.77 and 0.57 before): the other classes' masks turned into stripes the network reads
  as a class; at 0.75 they are the object removed and clutter kept. On shapes-resnet 0.5 is
  somewhat more class-selective than 0.75 (ρ 0.62 against 0.68) at equal top-1 quality;
- the more a generator trains, the larger its top-1 blobs grow on shapes-vgg (6 epochs: drop 0.49;
  2 epochs: 0.55, as before), so its committed fits take 2 epochs; digits-cnn's take
  ``p_predicted`` = 0.9 (0.75 lowered its drop from 0.149 to 0.131). Each card has its command;
- the other targets are classes the classifier finds plausible. A class drawn by its own
  probability would almost never differ from the top-1 for these confident classifiers (mean
  runner-up probability 0.05 on shapes); a uniformly random class of all would, on a 1,000-class
  model, mostly be an absurd one. ``top_k`` = 2 (the runner-up only) measured worse than 3 on
  shapes-resnet (ρ 0.64–0.66 against 0.56–0.60 in short fits), and 6 (every class) no better;
- ``targets=predicted`` reproduces the old fits' training (their cards have no ``targets``).

After every epoch the loss is measured on ``val_size`` validation images with fixed backgrounds,
for the predicted class (``val_ce``) and for the training's targets (``val_ce_targets``), and the
weights with the lowest ``val_ce`` (the best masks for the predicted class) are written as ``dcontrol-<transformer>.safetensors``
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
``filter_steps`` = 400, ``filter_lr`` = 0.01, ``filter_lr_main`` = 0, ``targets`` = top-k,
``top_k`` = 3, ``p_predicted`` = 0.75, ``limit`` = None (all), ``val_size`` = 128,
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
        "limit", "val_size", "p_blur", "blur_sigma", "noise_std", "checkpoint_every", "seed", "max_seconds",
        "targets", "top_k", "p_predicted", "filter_lr_main")
TARGETS = ("top-k", "predicted")


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
    filter_steps: int = knob(400, "steps pretraining the feature filter's class embedding C (Appendix A.1; default 400)",
                             min=0, max=10_000, step=10)
    filter_lr: float = knob(0.01, "Adam learning rate of the class embedding (default 1e-2)", min=1e-5, max=1.0)
    filter_lr_main: float = knob(0.0, "learning rate of the class embedding in stage 2; 0 = frozen after its "
                                 "pretraining (the paper's two-stage scheme; default 0)", min=0.0, max=1.0, advanced=True)
    limit: Optional[int] = knob(None, "at most this many training images; empty = all", min=1, auto="all")
    val_size: int = knob(128, "validation images, measured after every epoch (default 128)", min=1, max=10_000, step=1)
    checkpoint_every: int = knob(25, "steps between checkpoints (default 25)", min=1, step=1, advanced=True)
    seed: int = knob(0, "seed of the initialisation, data order and backgrounds (default 0)", min=0, step=1)
    max_seconds: Optional[float] = knob(None, "stop after this many seconds, keeping the best weights; empty = no limit",
                                        auto="no limit", advanced=True)
    targets: str = knob("top-k", "class c of Eq. 4 while training: the predicted class with probability p_predicted, else "
                        "one of the next top_k - 1 classes (top-k; default), or always the predicted one (predicted: "
                        "the fits before issue 18)", choices=TARGETS)
    top_k: int = knob(3, "targets=top-k: the other class is drawn uniformly from ranks 2..top_k (default 3)", min=1, max=1000, step=1)
    p_predicted: float = knob(0.75, "targets=top-k: share of the predicted class among the targets (default 0.75)",
                              min=0.0, max=1.0, step=0.05)

    def __post_init__(self) -> None:
        if not isinstance(self.method, DControlConfig):
            raise ExplainerError(f"dcontrol fit: method must be a DControlConfig, got {self.method!r}")
        default = DControlConfig()
        for f in dataclasses.fields(DControlConfig):
            if f.name not in OBJECTIVE and getattr(self.method, f.name) != getattr(default, f.name):
                raise ExplainerError(f"dcontrol fit: {f.name} is a setting of the explanation, not of the fit")
        if self.targets not in TARGETS:
            raise ExplainerError(f"dcontrol fit: targets must be one of {', '.join(TARGETS)}, got {self.targets!r}")
        if not (isinstance(self.p_predicted, (int, float)) and 0.0 <= float(self.p_predicted) <= 1.0):
            raise ExplainerError(f"dcontrol fit: p_predicted must be in [0, 1], got {self.p_predicted!r}")
        for name in ("width", "epochs", "batch_size", "halve_every", "val_size", "checkpoint_every", "top_k"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ExplainerError(f"dcontrol fit: {name} must be an integer >= 1, got {v!r}")
        if not isinstance(self.filter_steps, int) or self.filter_steps < 0:
            raise ExplainerError(f"dcontrol fit: filter_steps must be an integer >= 0, got {self.filter_steps!r}")
        if not (isinstance(self.filter_lr_main, (int, float)) and math.isfinite(self.filter_lr_main) and self.filter_lr_main >= 0):
            raise ExplainerError(f"dcontrol fit: filter_lr_main must be a number >= 0, got {self.filter_lr_main!r}")
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


def training_targets(logits: torch.Tensor, targets: str, top_k: int, p_predicted: float, rng: torch.Generator) -> torch.Tensor:
    """The class ``c`` of Eq. 4 for each image of a batch: the predicted class, or (``top-k``) with
    probability ``1 - p_predicted`` a class drawn uniformly from the classifier's ranks 2..top_k
    (drawn from ``rng`` after the backgrounds, so ``predicted`` fits draw what they always drew)."""
    if targets == "predicted" or min(top_k, logits.shape[1]) < 2:
        return logits.argmax(1)
    k = min(top_k, logits.shape[1])
    top = logits.topk(k, dim=1).indices  # (B, k), top[:, 0] the predicted class
    b, dev = logits.shape[0], logits.device
    other = top.gather(1, torch.randint(1, k, (b, 1), generator=rng, device=dev))[:, 0]
    keep = torch.rand(b, generator=rng, device=dev) < p_predicted
    return torch.where(keep, top[:, 0], other)


def mask_loss(gen: D.MaskGenerator, clf: Classifier, x: torch.Tensor, cfg: DControlConfig, rng: torch.Generator,
              targets: str = "predicted", top_k: int = 1, p_predicted: float = 1.0) -> torch.Tensor:
    """Eq. 4 for a batch: CE of the classifier on ``φ(I, M)`` against the class ``c`` the generator
    was asked about (:func:`training_targets`; the controller and backgrounds from the method's
    knobs ``cfg``)."""
    with torch.no_grad():
        feats, logits = D.capture(clf, x, gen.plan)
        feats = {k: v.detach() for k, v in feats.items()}
        a = D.backgrounds(x, rng, cfg.p_blur, cfg.blur_sigma, cfg.noise_std)
        c = training_targets(logits, targets, top_k, p_predicted, rng)
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


def filter_separation(gen: D.MaskGenerator, clf: Classifier, x: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Appendix A.1's objective measured: ``mean_ij sigmoid(X_ijᵀ C_k)`` averaged over images for
    the predicted class, the runner-up and all the other classes."""
    plan = gen.plan
    key = plan["taps"][0]["name"] if plan["mode"] == "conv" else plan["vector"]["name"]
    sel, second, rest = [], [], []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            feats, logits = D.capture(clf, x[i : i + batch_size], plan)
            s = torch.sigmoid(gen.filter.scores(feats[key].float()))
            s = s.flatten(2).mean(-1) if s.dim() == 4 else s  # (B, K)
            order = logits.argsort(1, descending=True)
            sel.append(s.gather(1, order[:, :1]))
            second.append(s.gather(1, order[:, 1:2]))
            rest.append(s.gather(1, order[:, 1:]).mean(1, keepdim=True))
    return {k: round(float(torch.cat(v).mean()), 4) for k, v in (("selected", sel), ("runner_up", second), ("others", rest))}


def _stage_params(gen: D.MaskGenerator, stage: str, opts: "FitOptions") -> list[dict]:
    """Adam's parameter groups: the class embedding alone in stage 1; the rest in stage 2, plus the
    embedding (its own group, scaled like the rest) when ``filter_lr_main`` > 0."""
    if stage == "filter":
        return [{"params": [gen.filter.embedding], "lr": opts.filter_lr, "base": opts.filter_lr}]
    groups = [{"params": [p for n, p in gen.named_parameters() if not n.startswith("filter.")], "lr": opts.lr, "base": opts.lr}]
    if opts.filter_lr_main > 0:
        groups.append({"params": [gen.filter.embedding], "lr": opts.filter_lr_main, "base": opts.filter_lr_main})
    return groups


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
    opt = torch.optim.Adam(_stage_params(gen, stage, opts))
    if ckpt.exists():
        step, extra = ckpt.load(gen, opt)
        best, history, seconds = extra["best"], extra["history"], extra["seconds"]

    val_seed = opts.seed * 1_000_003 + 999_999_937
    tgt = (opts.targets, opts.top_k, opts.p_predicted)

    def evaluate(targets: tuple) -> float:
        gen.eval()
        with torch.no_grad():
            rng = torch.Generator(device=dev).manual_seed(val_seed)
            losses = [float(mask_loss(gen, clf, xva[i : i + opts.batch_size], opts.method, rng, *targets)) * len(xva[i : i + opts.batch_size]) for i in range(0, len(xva), opts.batch_size)]
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
            "filter_separation": filter_separation(gen, clf, xva, opts.batch_size),
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
            opt = torch.optim.Adam(_stage_params(gen, stage, opts))
        x = batch(step)
        if stage == "filter":
            loss = filter_loss(gen, clf, x)
            msg = f"filter {float(loss.detach()):.3f}"
        else:
            epoch = (step - opts.filter_steps) // per_epoch
            for g in opt.param_groups:
                g["lr"] = g["base"] * 0.5 ** (epoch // opts.halve_every)
            loss = mask_loss(gen, clf, x, opts.method, step_generator(opts.seed, step, dev), *tgt)
            msg = f"epoch {epoch + 1}/{opts.epochs} CE {float(loss.detach()):.3f}"
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        seconds = time.perf_counter() - t0
        end_of_epoch = stage == "main" and (step - opts.filter_steps) % per_epoch == 0
        out_of_time = opts.max_seconds is not None and seconds >= opts.max_seconds and stage == "main"
        if end_of_epoch or step == total or out_of_time:
            # the weights kept are those whose masks for the predicted class are best (the loss
            # of the fits before issue 18); with other targets their loss is recorded beside it
            vloss = evaluate(("predicted", 1, 1.0))
            row = {"step": step, "epoch": round((step - opts.filter_steps) / per_epoch, 3), "val_ce": round(vloss, 5)}
            if opts.targets != "predicted":
                row["val_ce_targets"] = round(evaluate(tgt), 5)
            history.append({**row, "seconds": round(seconds, 1)})
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
