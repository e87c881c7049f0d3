"""Fitting MIP-IN's inverses (paper 004, Eq. 5–8, Algorithm 1) from streamed statistics.

    python -m explainers fit --explainer mipin --model shapes-vgg --data shapes --out assets/explainers/shapes-vgg

The inverses are learned top-down (Eq. 5): one pass over the data per layer that has parameters.
In the pass for layer k the network runs forward (keeping every X_l and the max-pool switches),
the target logits ``Y_c`` of all the classes being fitted are inverted through the layers above k
with the inverses already fitted (forward ReLU applied, Algorithm 1 lines 11–16), and the
sufficient statistics of the regression ``X_k ≈ g_k(S_{k+1})`` are accumulated (centred moments
in float64, merged batch by batch: memory does not grow with the number of samples). Then the
layer's inverse is solved in closed form (Eq. 6 for dense layers, the normal equations over the
transposed patches for convolutions, Eq. 7). Pooling layers are inverted from the forward pass
(max-pooling's switches, Eq. 8; average pooling's shares): nothing to fit. Held-out images get
the same passes, and every layer's R² on them and on the training images goes into the card
(``layers``, ``summary``; :mod:`explainers.methods.mipin.quality`).

Options (``--set key=value``):

- ``lam`` = 0.001: Eq. 6's ridge λ (dense inverses);
- ``conv_lam`` = 0.1: the ridge of the convolutions' normal equations, in units of the covariance
  of the transposed patches (the paper fits convolutions by SGD; in closed form the linearly
  dependent patches need an explicit ridge); empty = per layer, the one of ``CONV_LAMS`` that
  reconstructs the held-out images best. Those (1e-5–1e-3) gain 0.04–0.14 of held-out R² but
  make a less complete source signal (shapes-vgg APC 41% against 18%) and a less faithful map
  (shapes-vgg top-10% drop 0.33 against 0.53), so 0.1 stays the default; the card lists the
  held-out R² of every ridge in ``CONV_LAMS``;
- ``holdout`` = 200, ``holdout_split`` = val: the held-out images, from that split of a built-in
  dataset or image folder (0, pixel tensors, or a folder without the split: none);
- ``forward_relu`` = true: gate the training signals (Algorithm 1, lines 14–15);
- ``classes`` = all: the target classes to fit, e.g. ``0,3`` (Algorithm 1 fits one network per class);
- ``limit`` = all: number of training images;
- ``positions`` = 64: pixels sampled per image for each convolution's normal equations
  (0 = every position; 256 changed digits-cnn's held-out R² by 0.003); sampling is seeded per
  image, so the fit does not depend on the batching;
- ``batch_size`` = 64; ``split`` = train; ``seed`` = 0;
- ``max_memory_gb`` = 8: refuse (with the reason) a fit whose statistics would need more memory —
  e.g. all 1000 classes of a torchvision VGG (its 25088 -> 4096 dense inverse is 0.8 GB per class).

A fit in progress is checkpointed after every layer (``mipin.ckpt.safetensors`` in the output
folder) and resumes from there when run again with the same options.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch

from ..batching import map_chunks
from ..classifiers.base import Classifier
from ..config import knob, parse
from ..errors import ExplainerError
from ..fitted import load_fitted, save_fitted, user_dir
from ..methods import mipin as M
from ..progress import report


@dataclass(frozen=True)
class MIPINFitOptions:
    """See the module docstring. Read with :func:`explainers.config.parse`; ``all`` also reads as
    None (every class, every image) for ``classes`` and ``limit``."""

    lam: float = knob(0.001, "λ, ridge of the dense inverses (Eq. 6; paper: 0.001)", min=0.0, symbol="λ")
    conv_lam: Optional[float] = knob(0.1, "ridge of the convolutions' normal equations, in units of the patches' "
                                     "covariance (default 0.1: the most complete and faithful maps); empty = per "
                                     "layer, the best reconstruction of the held-out images", min=0.0, auto="held-out")
    forward_relu: bool = knob(True, "gate the training signals by the forward ReLU (Algorithm 1, lines 14–15; default on)")
    classes: Optional[str] = knob(None, "target classes to fit, e.g. 0,3 (indices or names); empty = all "
                                  "(Algorithm 1 fits one inverse network per class)", auto="all")
    limit: Optional[int] = knob(None, "at most this many training images; empty = all", min=1, auto="all")
    positions: int = knob(64, "pixels sampled per image for each convolution's normal equations; 0 = every position "
                          "(default 64)", min=0, step=1)
    holdout: int = knob(200, "held-out images (from the holdout_split of a built-in dataset or image folder) on which "
                        "each inverse's R² is measured and the convolutions' ridge chosen; 0 = none (default 200)",
                        min=0, step=1)
    holdout_split: str = knob("val", "split the held-out images come from (default val)", advanced=True)
    batch_size: int = knob(64, "images per forward pass (halved on CUDA out-of-memory; default 64)", min=1, step=1)
    split: str = knob("train", "split of a built-in dataset to fit on (default train)")
    seed: int = knob(0, "seed of the sampled positions (default 0)", min=0, step=1)
    max_memory_gb: float = knob(8.0, "refuse a fit whose statistics would need more memory, in GB (default 8)",
                                min=0.0, advanced=True)

    def __post_init__(self) -> None:
        for name in ("lam", "conv_lam"):
            v = getattr(self, name)
            if v is None and name == "conv_lam":
                continue
            if not (isinstance(v, (int, float)) and 0 <= float(v) < float("inf")):
                raise ExplainerError(f"mipin fit: {name} must be a non-negative number, got {v!r}")
        if self.batch_size < 1:
            raise ExplainerError(f"mipin fit: batch_size must be at least 1, got {self.batch_size}")
        if self.positions < 0:
            raise ExplainerError(f"mipin fit: positions must be >= 0 (0 = all), got {self.positions}")
        if self.holdout < 0:
            raise ExplainerError(f"mipin fit: holdout must be >= 0 (0 = none), got {self.holdout}")
        if not self.max_memory_gb > 0:
            raise ExplainerError(f"mipin fit: max_memory_gb must be positive, got {self.max_memory_gb}")
        if self.limit is not None and self.limit < 1:
            raise ExplainerError(f"mipin fit: limit must be at least 1, got {self.limit}")


def _options(options: dict) -> MIPINFitOptions:
    """The options through the shared parser (``all`` = None for ``classes`` and ``limit``)."""
    vals = {k: None if k in ("classes", "limit") and isinstance(v, str) and v.strip().lower() == "all" else v
            for k, v in options.items()}
    return parse(MIPINFitOptions, vals, "mipin fit")


def _classes(opts: MIPINFitOptions, clf: Classifier) -> list[int]:
    if opts.classes is None:
        return list(range(clf.num_classes))
    out = []
    for tok in str(opts.classes).replace(";", ",").split(","):
        tok = tok.strip()
        if tok:
            out.append(clf.label_index(tok))
    if not out:
        raise ExplainerError("mipin fit: no classes given")
    return sorted(set(out))


# ---------------------------------------------------------------------------------------------
# data


class _Source:
    """Pixel batches (B, 3, H, W) in [0, 1] from a pixel tensor, a Dataset or a dataset name/folder."""

    def __init__(self, clf: Classifier, data, split: str, limit: Optional[int]):
        self.clf = clf
        self.limit = limit
        self.tensor: Optional[torch.Tensor] = None
        self.ds = None
        if isinstance(data, torch.Tensor):
            x = data.float()
            if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != tuple(clf.input_size):
                raise ExplainerError(f"mipin fit: pixel data must be (N, 3, {clf.input_size[0]}, {clf.input_size[1]})")
            self.tensor = x[:limit] if limit else x
            self.name = "tensor"
        else:
            from ..data import Dataset, load_dataset

            if data is None or data == "":
                raise ExplainerError(_needs_data(clf))
            self.ds = data if isinstance(data, Dataset) else load_dataset(data, split, limit=limit)
            self.name = getattr(self.ds, "name", str(data))
        if len(self) == 0:
            raise ExplainerError(f"mipin fit: no images in {self.name}")

    def __len__(self) -> int:
        n = self.tensor.shape[0] if self.tensor is not None else len(self.ds)
        return n if self.limit is None else min(n, self.limit)

    def pixels(self, lo: int, hi: int) -> torch.Tensor:
        """Images ``lo`` to ``hi`` (exclusive) on the classifier's device."""
        if self.tensor is not None:
            x = self.tensor[lo:hi]
        else:
            x = torch.stack([self._pixels(item.image) for item in self.ds[lo:hi]])
        return x.to(self.clf.device)

    def _pixels(self, img) -> torch.Tensor:
        h, w = self.clf.input_size
        if img.mode == "RGB" and img.size == (w, h):  # the built-in datasets: no resizing needed
            return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return self.clf.pixels(img)


_HELDOUT: dict = {}  # (dataset name, split, n) -> Dataset: the sanity check fits many networks on the same images


def _heldout_source(clf: Classifier, data, opts: MIPINFitOptions) -> tuple[Optional[_Source], str]:
    """The held-out images (``holdout`` of the ``holdout_split`` of the fitted source), and where
    they come from or why there are none (pixel tensors, a folder without that split)."""
    from ..data import Dataset, dataset_names, load_dataset

    if opts.holdout == 0:
        return None, "none (holdout=0)"
    if isinstance(data, Dataset):
        if getattr(data, "name", None) not in dataset_names():
            return None, "none (a Dataset object that is not a built-in dataset)"
        data = data.name
    if not isinstance(data, (str, Path)):
        return None, "none (pixel data)"
    if opts.holdout_split == opts.split:
        return None, f"none (holdout_split is the fitted split {opts.split!r})"
    key = (str(data), opts.holdout_split, opts.holdout)
    try:
        ds = _HELDOUT.get(key) or load_dataset(data, opts.holdout_split, limit=opts.holdout)
    except ExplainerError as e:
        return None, f"none ({str(e).splitlines()[0]})"
    if getattr(ds, "split", None) != opts.holdout_split or len(ds) == 0:
        return None, f"none ({data} has no {opts.holdout_split!r} split)"
    if str(data) in dataset_names() and len(_HELDOUT) < 8:
        _HELDOUT[key] = ds
    return _Source(clf, ds, opts.holdout_split, opts.holdout), f"{getattr(ds, 'name', data)}/{opts.holdout_split}"


def _needs_data(clf: Classifier) -> str:
    if clf.dataset:
        return f"mipin fit: --data is needed (the built-in dataset of {clf.id} is {clf.dataset!r})"
    return (f"mipin fit: {clf.id} has no built-in dataset; give --data an image folder "
            "(one sub-folder per class, e.g. ImageNet validation images)")


# ---------------------------------------------------------------------------------------------
# one layer's statistics


HELDOUT_INDEX = 1 << 40  # held-out image i is sampled as image HELDOUT_INDEX + i (other positions than training image i)


def _positions(k: int, i0: int, B: int, hw: int, P: int, seed: int, device) -> Optional[torch.Tensor]:
    """Flat positions sampled per image (seeded by the image's index, so batching does not matter)."""
    if P <= 0 or P >= hw:
        return None
    rows = []
    for i in range(i0, i0 + B):
        g = torch.Generator().manual_seed((seed * 1_000_003 + k * 10_007 + i) % (2**63 - 1))
        rows.append(torch.randperm(hw, generator=g)[:P])
    return torch.stack(rows).to(device)


def _accumulate(plan: M.Plan, k: int, acc: list, S: torch.Tensor, rec: M.Record, i0: int, opts: MIPINFitOptions) -> None:
    """Add one batch to stage k's moments (one per class): X_k against S_{k+1} (C, B, ...)."""
    st = plan.stages[k]
    X = rec.xs[k]
    C, B = S.shape[:2]
    if isinstance(acc[0], M.Residuals):  # a pooling inverse, measured before its forward-ReLU gate like the fitted ones
        G = M.inverse_step(plan, k, {}, S, rec, gate=False)
        for c in range(C):
            acc[c].update(X.reshape(B, -1), G[c].reshape(B, -1))
    elif st.kind == "linear":
        for c in range(C):
            acc[c].update(X.reshape(B, -1), S[c].reshape(B, -1))
    elif st.kind == "conv":
        c_in, H, W = st.in_shape
        pos = _positions(k, i0, B, H * W, opts.positions, opts.seed, X.device)
        Xf = X.reshape(B, c_in, H * W)
        if pos is not None:
            Xf = torch.gather(Xf, 2, pos[:, None, :].expand(B, c_in, pos.shape[1]))
        Xr = Xf.transpose(1, 2).reshape(-1, c_in)
        for c in range(C):
            Z = M.conv_patches(S[c].reshape(B, *st.out_shape), st.hp, pos)  # (B, D, P)
            acc[c].update(Xr, Z.transpose(1, 2).reshape(-1, Z.shape[1]))
        acc[0].entries.track(X.reshape(B, -1))  # the same images for every class


def _fitted(plan: M.Plan, k: int) -> bool:
    """Whether stage k's inverse is fitted (dense, convolution) or read off the forward pass (pooling)."""
    return plan.stages[k].kind in ("linear", "conv")


def _moments_for(plan: M.Plan, k: int, device) -> M.Moments:
    st = plan.stages[k]
    top = k == len(plan.stages) - 1
    if st.kind == "linear":
        return M.Moments(int(np.prod(st.in_shape)), 1 if top else int(st.out_shape[0]), device)
    if st.kind == "conv":
        (kh, kw) = st.hp[0]
        return M.ConvMoments(st.in_shape[0], st.out_shape[0] * kh * kw, device, rows=st.in_shape[1] * st.in_shape[2])
    raise RuntimeError(st.kind)  # pragma: no cover


def _statistics_bytes(plan: M.Plan) -> int:
    """float64 statistics held for one class while the largest layer is being fitted."""
    most = 0
    for k, st in enumerate(plan.stages):
        n_in = int(np.prod(st.in_shape))
        if st.kind == "linear":
            m = 1 if k == len(plan.stages) - 1 else int(np.prod(st.out_shape))
            most = max(most, (n_in * m + m * m + n_in + m) * 8)
        elif st.kind == "conv":
            d = st.out_shape[0] * st.hp[0][0] * st.hp[0][1]
            most = max(most, (st.in_shape[0] * d + d * d) * 8)
    return most


# ---------------------------------------------------------------------------------------------
# the fit


def fit_inverses(
    clf: Classifier,
    data: Union[str, Path, torch.Tensor, object],
    options: Optional[dict] = None,
    progress: Optional[Callable] = None,
    checkpoint: Optional[Path] = None,
) -> tuple[dict, dict]:
    """Fit the inverses; returns ``(stats, info)``: stage -> stacked stored statistics, and facts."""
    opts = _options(dict(options or {}))
    plan = M.get_plan(clf)
    classes = _classes(opts, clf)
    need = _statistics_bytes(plan) * len(classes)
    if need > opts.max_memory_gb * 1e9:
        raise ExplainerError(
            f"mipin fit: the statistics of {len(classes)} classes need about {need / 1e9:.1f} GB "
            f"(the dense inverses of {clf.id} are large); fit fewer classes with --set classes=0,1,... "
            f"or raise --set max_memory_gb={need / 1e9 * 1.2:.0f}"
        )
    src = _Source(clf, data, opts.split, opts.limit)
    held_src, held_from = _heldout_source(clf, data, opts)
    L = len(plan.stages)
    # fitted layers get a pass over the training images and one over the held-out ones (their R²,
    # the convolutions' ridge); the pooling inverses (switches, shares) only the held-out pass
    todo = [k for k in range(L - 1, -1, -1) if _fitted(plan, k) or held_src is not None]
    n_train = -(-len(src) // opts.batch_size)
    n_held = -(-len(held_src) // opts.batch_size) if held_src is not None else 0
    total = sum((n_train if _fitted(plan, k) else 0) + n_held for k in todo)
    key = {"options": dataclasses.asdict(opts), "plan": plan.signature(), "classes": classes, "n": len(src), "model": clf.id,
           "heldout": held_from}
    stats: dict[int, dict] = {}
    seconds: dict[str, float] = {}
    layers: dict[str, dict] = {}
    if checkpoint is not None and checkpoint.exists() and checkpoint.with_suffix(".json").exists():
        tensors, card = load_fitted(checkpoint, device=clf.device)
        if card.get("key") == json.loads(json.dumps(key)):
            for name, t in M.unpack(tensors).items():
                stage, n = name.split(".", 1)
                stats.setdefault(int(stage[1:]), {})[n] = t
            seconds = dict(card.get("seconds", {}))
            layers = dict(card.get("layers", {}))
    params = {k: M.solve_stage(plan.stages[k].kind, v, opts.lam) for k, v in stats.items()}
    done_batches = 0
    for k in todo:
        fitted = _fitted(plan, k)
        if k in stats or (not fitted and str(k) in layers):
            done_batches += (n_train if fitted else 0) + n_held
            report(progress, done_batches, total, f"layer {k} (resumed)")
            continue
        start = time.perf_counter()
        label = f"layer {k}: {plan.stages[k].label}"
        acc = None
        if fitted:
            acc = [_moments_for(plan, k, clf.device) for _ in classes]
            # a chunk that runs out of GPU memory is retried at half the size: the moments merge exactly
            # and the sampled positions are seeded per image, so the result does not change
            map_chunks(len(src), opts.batch_size,
                       lambda lo, hi: _batch(clf, plan, k, params, classes, acc, src.pixels(lo, hi), lo, opts),
                       lambda lo, hi, _: report(progress, done_batches + -(-hi // opts.batch_size), total, label))
            done_batches += n_train
        held = None
        if held_src is not None:
            held = [_moments_for(plan, k, clf.device) if fitted else M.Residuals() for _ in classes]
            map_chunks(len(held_src), opts.batch_size,
                       lambda lo, hi: _batch(clf, plan, k, params, classes, held, held_src.pixels(lo, hi), HELDOUT_INDEX + lo, opts),
                       lambda lo, hi, _: report(progress, done_batches + -(-hi // opts.batch_size), total, label + " (held out)"))
            done_batches += n_held
        if fitted:
            conv_lam = opts.conv_lam if plan.stages[k].kind == "conv" else opts.lam
            solved, facts = M.solve_layer(plan.stages[k], acc, held, conv_lam)
            # round-trip through the stored precision, so the layers below are fitted with exactly the
            # inverses that will be loaded (and a resumed fit is identical to an uninterrupted one)
            stats[k] = _stored(solved, clf.device)
            params[k] = M.solve_stage(plan.stages[k].kind, stats[k], opts.lam)
        else:
            facts = {"layer": plan.stages[k].label, "r2_heldout": round(M.residual_r2(held), 4)}
        seconds[str(k)] = round(time.perf_counter() - start, 2)
        layers[str(k)] = facts
        if checkpoint is not None:
            save_fitted(checkpoint, _flat(stats), opts, key=key, seconds=seconds, layers=layers)
    info = {"classes": classes, "plan": plan.signature(), "net_digest": M.net_digest(clf.net), "n_samples": len(src), "data": src.name,
            "heldout": {"from": held_from, "n": len(held_src) if held_src else 0},
            "layers": {k: layers[k] for k in sorted(layers, key=int, reverse=True)},
            "seconds_per_layer": seconds, "scope": plan.scope}
    info["summary"] = M.summary(info)
    return stats, info


def _batch(clf, plan, k, params, classes, acc, x01, i0, opts) -> None:
    """One batch into stage k's moments: X_k against S_{k+1}, the target logits inverted down
    through the inverses already fitted above k."""
    with torch.no_grad():
        rec = M.forward_record(clf.net, plan, clf.normalize(x01))
        S = rec.logits[:, classes].T.float()[..., None]  # (C, B, 1): S_L = Y_c (Algorithm 1, line 1)
        for j in range(len(plan.stages) - 1, k, -1):
            S = M.inverse_step(plan, j, params.get(j, {}), S, rec, bias=True, gate=opts.forward_relu)
        _accumulate(plan, k, acc, S, rec, i0, opts)


def _stored(d: dict, device) -> dict:
    packed = M.pack({f"s0.{n}": t for n, t in d.items()})
    return {k.split(".", 1)[1]: t.to(device) for k, t in M.unpack(packed).items()}


def _flat(stats: dict) -> dict[str, torch.Tensor]:
    return M.pack({f"s{k}.{name}": t for k, d in stats.items() for name, t in d.items()})


def fit(clf: Classifier, data, out_dir: Optional[Union[str, Path]] = None, progress: Optional[Callable] = None, **options) -> Path:
    """The ``Fitter`` entry point: fit, write ``mipin.safetensors`` + ``mipin.json`` in ``out_dir``
    (default: the user's fitted folder for the classifier) and return the weights path."""

    if clf is None:
        raise ExplainerError("mipin fit needs --model")
    if data is None or data == "":
        raise ExplainerError(_needs_data(clf))
    out = Path(out_dir) if out_dir else user_dir(clf.id)
    ckpt = out / f"{M.FIT_NAME}.ckpt.safetensors"
    start = time.perf_counter()
    stats, info = fit_inverses(clf, data, options, progress, checkpoint=ckpt)
    opts = _options(dict(options))
    cmd = f"python -m explainers fit --explainer mipin --model {clf.id} --data {data if isinstance(data, (str, Path)) else 'DATA'}"
    cmd += "".join(f" --set {k}={v}" for k, v in options.items()) + (f" --out {out_dir}" if out_dir else "")
    path = save_fitted(
        out / f"{M.FIT_NAME}.safetensors", _flat(stats), opts,
        model=clf.id, version=M.FIT_VERSION, command=cmd, seconds=round(time.perf_counter() - start, 1),
        torch=torch.__version__, **info,
    )
    for p in (ckpt, ckpt.with_suffix(".json")):
        if p.exists():
            p.unlink()
    M.clear_fit_cache()
    return path
