"""Long work, one rule for every page.

- The estimate is shown before the work (``explainers.cost``); anything expected to take more than
  ``LONG_SECONDS`` starts only on a click of its "Run" button, never on a rerun another widget caused.
- The work runs in a thread beside the script (a :class:`Job` per *slot*: a cell of the grid, the
  result of a page). The script draws a progress bar (share done, time left) and a Stop button and
  waits for it; a rerun from another widget interrupts only the waiting, and the next run attaches
  to the same job again, so the work goes on. A job is keyed on everything that makes its result:
  a new key in the same slot cancels the old job (nothing stale is finished or shown).
- Stop (the button, or Streamlit's own) cancels the job: the engine's progress callback raises
  ``explainers.Cancelled`` at its next report. The slot then shows "Stopped — partial result" (with
  whatever partial maps the engine reported) until the next click of Run replaces it. While the
  job runs, each partial result it publishes (anytime PMI: the finished pixels, NaN elsewhere) is
  drawn under the progress bar by the caller's ``draw_partial``.
- A finished result is kept (the caller's cache via ``ready``, or this module's small memo), so a
  widget that does not change the key never recomputes it.

The engine is never called with Streamlit objects, and the worker thread makes no Streamlit call.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import streamlit as st

from explainers import Cancelled

LONG_SECONDS = 30.0  # expected work above this waits for a click
POLL_SECONDS = 0.25  # how often the waiting script redraws the progress bar
MEMO_ENTRIES = 64  # finished results kept for work that has no cache of its own
_JOBS = "work.jobs"  # session-state key of this session's jobs, by slot


@dataclass
class Job:
    """One piece of work in a thread. ``report`` is the engine's progress callback."""

    key: Any
    label: str
    estimate: Optional[float]
    cancel: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)
    finished: Optional[float] = None
    done: int = 0
    total: int = 0
    message: str = ""
    partial: Any = None  # the latest partial result the engine reported, if it reports any
    state: str = "running"  # running | done | failed | stopped
    result: Any = None
    error: Optional[BaseException] = None
    thread: Optional[threading.Thread] = None
    learned: bool = False  # its time was fed back into the estimates (``ui.cache.learn``)

    def report(self, done: int, total: int, message: str = "", partial: Any = None) -> None:
        if self.cancel.is_set():
            raise Cancelled(f"{self.label}: stopped")
        self.done, self.total, self.message = int(done), int(total), message
        if partial is not None:
            self.partial = partial

    @property
    def share(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    def status(self) -> str:
        """'PMI · 40% · about 2 min left' (the time left once a second of work tells the rate)."""
        message = "" if self.message in self.label else self.message
        text = f"{self.label} {message}".strip() + f" · {self.share:.0%}"
        elapsed = time.monotonic() - self.started
        if self.cancel.is_set():
            return f"{self.label} · stopping…"
        if 0 < self.done < self.total and elapsed > 1.0:
            text += f" · about {duration(elapsed * (self.total - self.done) / self.done)} left"
        elif self.done == 0 and self.estimate:
            text += f" · about {duration(self.estimate)} expected"
        return text


def duration(seconds: float) -> str:
    """A duration for people: '0.4 s', '12 s', '3 min', '1.5 h'."""
    if seconds < 1:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class Outcome:
    """What a slot holds now: ``done`` (``result``), ``waiting`` (for a click), ``stopped``
    (``partial``, ``share``) or ``failed`` (``error``)."""

    state: str
    result: Any = None
    error: Optional[BaseException] = None
    partial: Any = None
    share: float = 0.0

    @property
    def ok(self) -> bool:
        return self.state == "done"


_MEMO: "OrderedDict[Any, Any]" = OrderedDict()
_MEMO_LOCK = threading.Lock()


def remember(key: Any, value: Any) -> None:
    with _MEMO_LOCK:
        _MEMO[key] = value
        _MEMO.move_to_end(key)
        while len(_MEMO) > MEMO_ENTRIES:
            _MEMO.popitem(last=False)


def recall(key: Any) -> Any:
    with _MEMO_LOCK:
        if key in _MEMO:
            _MEMO.move_to_end(key)
            return _MEMO[key]
    return None


def jobs() -> dict[str, Job]:
    return st.session_state.setdefault(_JOBS, {})


def cancel_all() -> None:
    """Cancel every job of this session (the classifier or the image changed)."""
    for job in jobs().values():
        job.cancel.set()
    jobs().clear()


def _stop(slot: str) -> None:  # the Stop button's callback (runs before the script)
    job = jobs().get(slot)
    if job is not None:
        job.cancel.set()


def _start(slot: str, key: Any, label: str, work: Callable, estimate: Optional[float], memo: bool) -> Job:
    job = Job(key, label, estimate)

    def target() -> None:
        try:
            job.result = work(job.report)
            if memo:
                remember(key, job.result)
            job.state = "done"
        except Cancelled:
            job.state = "stopped"
        except BaseException as e:  # noqa: BLE001 - shown in the slot as one line
            job.error, job.state = e, "failed"
        finally:
            job.finished = time.monotonic()

    job.thread = threading.Thread(target=target, name=f"work:{slot}", daemon=True)
    jobs()[slot] = job
    job.thread.start()
    return job


def _wait(slot: str, job: Job, where: Any, draw_partial: Optional[Callable[[Any], None]] = None) -> None:
    """Draw the job's progress (and a Stop button) until it ends. A rerun request interrupts this
    (the job goes on); Streamlit's own Stop and a closed session cancel it. (That needs
    ``runner.fastReruns = false``, as in the repository's config: with fast reruns Streamlit stops
    the script for every widget change, and the job would be cancelled each time.)"""
    from streamlit.runtime.scriptrunner_utils.exceptions import StopException

    box = where.empty()
    with box.container():
        bar = st.progress(job.share, text=job.status())
        st.button("Stop", key=f"work.stop.{slot}", on_click=_stop, args=(slot,), icon=":material/stop_circle:",
                  help="stop this computation; what it finished so far stays on the page")
        shelf = st.empty()  # the latest partial result, redrawn when a new one arrives
    drawn = None
    try:
        while job.state == "running":
            bar.progress(job.share, text=job.status())
            part = job.partial
            if draw_partial is not None and part is not None and part is not drawn:
                drawn = part
                with shelf.container():
                    draw_partial(part)
            time.sleep(POLL_SECONDS)
    except StopException:
        job.cancel.set()
        raise
    box.empty()


def run(slot: str, key: Any, label: str, work: Callable[[Callable], Any], estimate: Any = None, *,
        ready: Optional[Callable[[], Any]] = None, click: Optional[bool] = None, where: Any = None,
        memo: bool = True, draw_partial: Optional[Callable[[Any], None]] = None) -> Outcome:
    """The long-work rule for one ``slot`` of the page (see the module's docstring).

    ``work(progress)`` computes the result for ``key`` (in a thread; no Streamlit calls);
    ``estimate``: its expected seconds, or a function giving them (asked only when the work is to be
    started; it may raise to refuse the work), None when unknown; ``ready()``: the result if the caller's cache
    has it, else None (asked first); ``click``: wait for a click (default: when the estimate is above
    ``LONG_SECONDS``); ``where``: the container to draw in; ``memo``: keep the result in this module's
    memo (off when ``ready`` has its own cache); ``draw_partial(partial)``: draws a partial result
    the running job published (Streamlit calls, made in the script while it waits).
    """
    where = where if where is not None else st.container()
    table = jobs()
    job = table.get(slot)
    if job is not None and job.key != key:  # inputs changed: the old work is of no use any more
        job.cancel.set()
        del table[slot]
        job = None
    if job is None or job.state == "done":
        hit = ready() if ready is not None else (recall(key) if memo else None)
        if hit is not None:
            return Outcome("done", hit)
        if job is not None:
            return Outcome("done", job.result)
    drawn = False
    if callable(estimate) and (job is None or job.state == "stopped"):
        estimate = estimate()  # only now: a cache hit or a running job needs no estimate
    if job is None:
        needs_click = click if click is not None else (estimate is None or estimate > LONG_SECONDS)
        if needs_click:
            drawn = True
            if not _run_button(where, slot, label, estimate, "Run"):
                return Outcome("waiting")
        job = _start(slot, key, label, work, estimate, memo)
    elif job.state == "stopped":
        drawn = True
        if _run_button(where, slot, label, estimate, "Run again", stopped=job):
            job = _start(slot, key, label, work, estimate, memo)
        else:
            return Outcome("stopped", partial=job.partial, share=job.share)
    if job.state == "running":
        _wait(slot, job, where, draw_partial)
    if job.state == "done":
        return Outcome("done", job.result)
    if job.state == "stopped":
        if not drawn:  # the button was not drawn in this run yet (one widget per key and run)
            _run_button(where, slot, label, job.estimate, "Run again", stopped=job)
        return Outcome("stopped", partial=job.partial, share=job.share)
    return Outcome("failed", error=job.error)


def _run_button(where: Any, slot: str, label: str, estimate: Optional[float], verb: str, stopped: Optional[Job] = None) -> bool:
    """The estimate (or the stopped state) and a Run button; gone again once clicked."""
    expected = f"about {duration(estimate)}" if estimate is not None else "time unknown"
    box = where.empty()
    with box.container():
        if stopped is not None:
            st.warning(f"Stopped — partial result: {label} was stopped at {stopped.share:.0%}. {verb} to replace it.",
                       icon=":material/stop_circle:")
        else:
            st.caption(f"{label}: {expected} — long work starts only on a click.")
        clicked = st.button(f"{verb} ({expected})", key=f"work.start.{slot}", icon=":material/play_arrow:")
    if clicked:
        box.empty()
    return clicked
