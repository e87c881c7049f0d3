"""Batched work on the classifier's device, with one back-off rule for running out of GPU memory.

``with_oom_backoff(fn, batch_size)`` calls ``fn(bs)`` and, on a CUDA out-of-memory error, frees the
cache and calls it again with half the batch, down to 1. ``map_chunks(n, batch_size, work)`` runs
``work(lo, hi)`` over ``[0, n)`` chunk by chunk, retrying only the chunk that failed at half size.
On the CPU nothing is retried: the chunks are exactly ``batch_size`` long.
"""
from __future__ import annotations

from typing import Callable, Optional, TypeVar

import torch

T = TypeVar("T")


def with_oom_backoff(fn: Callable[[int], T], batch_size: int) -> T:
    """``fn(batch_size)``, re-run with half the batch after each CUDA out-of-memory error."""
    bs = int(batch_size)
    while True:
        try:
            return fn(bs)
        except torch.cuda.OutOfMemoryError:
            if bs <= 1:
                raise
            torch.cuda.empty_cache()
            bs = max(1, bs // 2)


def map_chunks(
    n: int, batch_size: int, work: Callable[[int, int], T], done: Optional[Callable[[int, int, T], None]] = None
) -> list[T]:
    """``[work(lo, hi) for each chunk of [0, n)]``; a chunk that runs out of GPU memory is retried
    at half the size (and the smaller size is kept for the rest). ``done(lo, hi, result)`` is
    called after each chunk (to accumulate or report progress)."""
    out: list[T] = []
    lo, bs = 0, int(batch_size)
    while lo < n:
        hi = min(n, lo + bs)
        try:
            r = work(lo, hi)
        except torch.cuda.OutOfMemoryError:
            if bs <= 1:
                raise
            torch.cuda.empty_cache()
            bs = max(1, bs // 2)
            continue
        out.append(r)
        if done is not None:
            done(lo, hi, r)
        lo = hi
    return out


def step_generator(seed: int, step: int, device: torch.device | str) -> torch.Generator:
    """A generator seeded from (seed, step): training step ``step`` draws the same numbers whether
    the run went straight through or resumed from a checkpoint."""
    return torch.Generator(device=device).manual_seed(int(seed) * 1_000_003 + int(step) + 1)


def batch_for_memory(device: torch.device | str, bytes_per_item: int, requested: int, *, share: float = 0.5,
                     cap: int = 4096) -> int:
    """A batch size from the device's free memory: on CUDA the larger of ``requested`` and what fits in
    ``share`` of the free memory (``torch.cuda.mem_get_info``) at ``bytes_per_item`` each, at most
    ``cap``; elsewhere ``requested`` (CPU batches gain little past a few dozen images). Too large a
    guess is still safe: ``map_chunks`` halves a batch that runs out of memory."""
    dev = torch.device(device)
    if dev.type != "cuda" or not torch.cuda.is_available():
        return int(requested)
    free, _ = torch.cuda.mem_get_info(dev)
    return int(max(int(requested), min(int(cap), int(free * share) // max(1, int(bytes_per_item)))))


def forward_bytes(net: torch.nn.Module, x: torch.Tensor) -> int:
    """Peak activation bytes per image of a no-grad forward of ``net`` on ``x`` (1, C, H, W), measured
    with forward hooks as the largest sum of one module's input and output (a safe over-estimate of
    what a batch needs per image beyond the weights). The hooks are removed before returning."""
    peak = [x.numel() * x.element_size()]

    def hook(_m, inputs, output) -> None:
        size = sum(t.numel() * t.element_size() for t in (*inputs, output) if isinstance(t, torch.Tensor))
        peak[0] = max(peak[0], size)

    handles = [m.register_forward_hook(hook) for m in net.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    return int(peak[0] // max(1, x.shape[0]))


def classifier_autocast(device: torch.device | str, bf16: bool):
    """A context for classifier forwards: bfloat16 autocast on the device when ``bf16`` (CUDA, or CPU
    where PyTorch supports it), else nothing. Logits come back in bfloat16 under it: callers take
    ``.float()`` / ``.double()`` before a softmax, as PMI does."""
    import contextlib

    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
