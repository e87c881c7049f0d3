"""Progress reporting for long work.

The engine never prints. Long loops accept ``progress``: a callable ``progress(done, total, message)``
that the app maps to ``st.progress`` and the command line to a tqdm bar. To cancel a run, the callback
raises :class:`explainers.errors.Cancelled`; the engine does not catch it.

Anytime methods also publish what is final so far: ``progress(done, total, message, partial=maps)``
(a dict of (H, W) maps, NaN where not yet known). It is passed only to callbacks that take a
``partial`` keyword (or ``**kwargs``), so plain three-argument callbacks keep working.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Optional


def takes_partial(progress: Callable) -> bool:
    """Whether the callback accepts a ``partial=`` keyword."""
    try:
        params = inspect.signature(progress).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "partial" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def report(progress: Optional[Callable], done: int, total: int, message: str = "", partial: Any = None) -> None:
    """Call ``progress`` if given (with ``partial`` when there is one and it takes it).
    Cancellation is the callback raising ``Cancelled``."""
    if progress is None:
        return
    if partial is not None and takes_partial(progress):
        progress(done, total, message, partial=partial)
    else:
        progress(done, total, message)


def tqdm_progress(desc: str = ""):
    """A progress callback backed by a tqdm bar on stderr (for the command line).

    The bar appears on the first report, so a run that fails on its input prints only its error.
    Returns ``(callback, close)``.
    """
    from tqdm import tqdm

    state: dict = {}

    def callback(done: int, total: int, message: str = "") -> None:
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
        if bar.total != total:
            bar.total = total
        bar.n = done
        if message:
            bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    def close() -> None:
        if "bar" in state:
            state["bar"].close()

    return callback, close
