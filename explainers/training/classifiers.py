"""Train the embedded classifiers on the built-in datasets and write their weights to ``assets/``.

    python -m explainers.training.classifiers --model shapes-resnet   # one model
    python -m explainers.training.classifiers --all                   # every embedded model

Reproducible from ``--seed`` (weights init, shuffling and augmentation all come from seeded
generators; nothing global is touched). The best validation epoch is kept; the test accuracy is
written to ``assets/classifiers/<id>.json`` beside the weights.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ..classifiers.base import Classifier
from ..classifiers.embedded import EMBEDDED, EmbeddedSpec, fold_batchnorm
from ..progress import report


def _tensors(source: str, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    from ..data import load_dataset

    ds = load_dataset(source, split)
    x, y = ds.arrays()
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y).long(), list(ds.classes)


def _augment(x01: torch.Tensor, gen: torch.Generator, flips: bool, shift: int) -> torch.Tensor:
    """Random translation by up to ``shift`` px (zero-padded) and, optionally, flips / 90° turns."""
    b, _, h, w = x01.shape
    if shift > 0:
        pad = F.pad(x01, (shift, shift, shift, shift), mode="replicate")
        dx = torch.randint(0, 2 * shift + 1, (b,), generator=gen)
        dy = torch.randint(0, 2 * shift + 1, (b,), generator=gen)
        x01 = torch.stack([pad[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])
    if flips:
        f = torch.rand(b, generator=gen) < 0.5
        x01 = torch.where(f.view(-1, 1, 1, 1), x01.flip(3), x01)
        k = int(torch.randint(0, 4, (1,), generator=gen))
        x01 = torch.rot90(x01, k, dims=(2, 3))
    return x01


@torch.no_grad()
def accuracy(clf: Classifier, x_u8: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    correct = 0
    for i in range(0, len(y), batch_size):
        xb = x_u8[i : i + batch_size].float().div(255).to(clf.device)
        correct += int((clf.logits01(xb).argmax(1).cpu() == y[i : i + batch_size]).sum())
    return correct / max(len(y), 1)


def train(
    spec: EmbeddedSpec,
    epochs: Optional[int] = None,
    seed: Optional[int] = None,
    batch_size: int = 128,
    lr: float = 4e-3,
    device: str = "cpu",
    progress: Optional[Callable] = None,
) -> tuple[dict, torch.nn.Module]:
    """Train one embedded model; returns its card (labels, accuracies, settings) and the network."""
    epochs = epochs or spec.epochs
    seed = spec.seed if seed is None else seed
    xtr, ytr, classes = _tensors(spec.dataset, "train")
    xva, yva, _ = _tensors(spec.dataset, "val")
    xte, yte, _ = _tensors(spec.dataset, "test")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # weight init only; restored on exit
        net = spec.build(len(classes), training=True)
    clf = Classifier(spec.id, net, classes, (spec.input_size,) * 2, spec.mean, spec.std, spec.grayscale)
    net.to(device)
    for p in net.parameters():
        p.requires_grad_(True)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(ytr) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    flips = spec.dataset.startswith("shapes") and spec.dataset != "shapes-biased"
    shift = 2 if spec.dataset == "digits" else 3
    best, best_state, step, t0 = -1.0, None, 0, time.perf_counter()
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(ytr), generator=gen)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            xb = _augment(xtr[idx].float().div(255), gen, flips, shift).to(device)
            loss = F.cross_entropy(clf.logits01(xb), ytr[idx].to(device), label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            report(progress, step, steps, f"epoch {epoch + 1}/{epochs} loss {loss.item():.3f}")
        net.eval()
        acc = accuracy(clf, xva, yva)
        if acc >= best:
            best, best_state = acc, {k: v.detach().clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)
    net.eval()
    if spec.arch == "vgg-small":  # fold the training-time BN into the convs: Conv/ReLU/MaxPool only
        net = fold_batchnorm(net, spec.build(len(classes))).eval()
        clf = Classifier(spec.id, net, classes, (spec.input_size,) * 2, spec.mean, spec.std, spec.grayscale)
    extra = shortcut_report(clf, spec.dataset) if spec.dataset == "shapes-biased" else {}
    return {
        **extra,
        "labels": classes,
        "val_accuracy": round(best, 4),
        "test_accuracy": round(accuracy(clf, xte, yte), 4),
        "train_size": len(ytr),
        "epochs": epochs,
        "seed": seed,
        "seconds": round(time.perf_counter() - t0, 1),
        "command": f"python -m explainers.training.classifiers --model {spec.id} --seed {seed}",
    }, net


def markdown_table() -> str:
    """The committed embedded models' cards as a Markdown table (for the README)."""
    rows = ["| id | architecture | data | parameters | weights | test accuracy | training |", "| --- | --- | --- | --- | --- | --- | --- |"]

    def note(c: dict) -> str:
        if "tagged_others_called_ring" not in c:
            return ""
        return (f" (biased val {c['val_accuracy']:.1%}; unbiased test: untagged {c['test_accuracy_untagged']:.1%}, "
                f"tagged non-rings called ring {c['tagged_others_called_ring']:.1%})")

    for spec in EMBEDDED.values():
        if not spec.card.exists():
            rows.append(f"| {spec.id} | {spec.arch} | {spec.dataset} | – | not trained | – | – |")
            continue
        card = json.loads(spec.card.read_text())
        n = sum(v.numel() for v in load_file(str(spec.weights)).values())
        size = spec.weights.stat().st_size / 1e6
        rows.append(
            f"| {spec.id} | {spec.arch} | {spec.dataset} ({card['train_size']} train) | {n:,} | {size:.2f} MB | "
            f"{card['test_accuracy']:.2%}{note(card)} | {card['epochs']} epochs, seed {card['seed']}, {card['seconds']:.0f} s CPU |"
        )
    return "\n".join(rows)


def shortcut_report(clf: Classifier, dataset: str = "shapes-biased") -> dict:
    """On the unbiased test split of the biased set: accuracy on untagged images, and how often a
    tagged image of another class is called ``ring`` (the shortcut the classifier learned)."""
    from ..data import load_dataset

    ds = load_dataset(dataset, "test")
    x, y = ds.arrays()
    tag = np.array([bool(ds[i].extra.get("tag")) for i in range(len(ds))])
    ring = clf.labels.index("ring")
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    with torch.no_grad():
        pred = torch.cat([clf.logits01(xt[i : i + 500].float().div(255)).argmax(1) for i in range(0, len(y), 500)]).numpy()
    others = tag & (y != ring)
    return {
        "test_accuracy_untagged": round(float((pred[~tag] == y[~tag]).mean()), 4),
        "test_accuracy_tagged": round(float((pred[tag] == y[tag]).mean()), 4),
        "tagged_others_called_ring": round(float((pred[others] == ring).mean()), 4),
    }


def main(argv: Optional[list[str]] = None) -> int:
    from ..progress import tqdm_progress

    ap = argparse.ArgumentParser(prog="python -m explainers.training.classifiers", description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", choices=sorted(EMBEDDED), help="model id (repeatable)")
    ap.add_argument("--all", action="store_true", help="train every embedded model")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--table", action="store_true", help="print the committed models' figures as a Markdown table")
    args = ap.parse_args(argv)
    if args.table:
        print(markdown_table())
        return 0
    ids = sorted(EMBEDDED) if args.all else (args.model or [])
    if not ids:
        ap.error("give --model ID or --all")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for mid in ids:
        spec = EMBEDDED[mid]
        cb, close = tqdm_progress(mid)
        try:
            card, net = train(spec, args.epochs, args.seed, device=args.device, progress=cb)
        finally:
            close()
        spec.weights.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(spec.weights))
        spec.card.write_text(json.dumps({"arch": spec.arch, "dataset": spec.dataset, **card}, indent=2))
        print(f"{mid}: test accuracy {card['test_accuracy']:.2%} (val {card['val_accuracy']:.2%}) in {card['seconds']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
