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
