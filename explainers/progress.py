"""Progress reporting for long work.

The engine never prints. Long loops accept ``progress``: a callable ``progress(done, total, message)``
that the app maps to ``st.progress`` and the command line to a tqdm bar. To cancel a run, the callback
raises :class:`explainers.errors.Cancelled`; the engine does not catch it.
"""
from __future__ import annotations

from typing import Callable, Optional


def report(progress: Optional[Callable], done: int, total: int, message: str = "") -> None:
    """Call ``progress`` if given. Cancellation is the callback raising ``Cancelled``."""
    if progress is not None:
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
