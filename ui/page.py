"""The page scaffold every page in ``pages/`` uses, so a page only arranges widgets and figures.

- :func:`prologue`: require a classifier and an image from the sidebar, load the classifier, its
  top-5 and the image as the classifier sees it; one ``st.error`` and ``st.stop()`` on a bad input;
  a one-line warning above everything for an image much smaller than the input or of an extreme
  aspect ratio (it is still classified).
- :func:`explanation` / :func:`explain` / :func:`explain_or_stop`: an engine result under the
  long-work rule of ``ui.work`` (estimate shown, a click for long work, progress with the time left,
  Stop with a "stopped — partial result" state, finished results never recomputed).
- :func:`with_progress`: a progress bar around a short call made in the script itself.
- :func:`failure` / :func:`stop`: user-facing messages, one line (``explainers.errors.one_line``).
- engine calls some pages need beyond ``ui.cache`` (the in-fills of one patch, the metrics of one
  map, a dataset evaluation; the sanity check is in ``ui.sanity_check``), so pages hold no tensor work.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, TypeVar

import numpy as np
import streamlit as st

import explainers
from explainers import evaluation, metrics
from explainers.core import METHODS, Explanation
from explainers.errors import ExplainerError, one_line

from . import cache, plots, sidebar, work

T = TypeVar("T")


# ------------------------------------------------------------------------------------ messages


USER_LIMIT = 600  # an ExplainerError is written for the user (often ending in the command that fixes it): keep it whole


def failure(e: BaseException, what: str = "") -> str:
    """One line for the user: the message of an ``ExplainerError`` (their input), else the bug's
    type and its first words (never a traceback)."""
    if isinstance(e, ExplainerError):
        text = one_line(e, USER_LIMIT)
        return f"{what}: {text}" if what else text
    return f"{what + ' failed' if what else 'Failed'}: {type(e).__name__}: {one_line(e)}"


def stop(e: BaseException, what: str = "") -> NoReturn:
    """Show ``e`` in one ``st.error`` box and stop the page."""
    st.error(failure(e, what))
    st.stop()
    raise AssertionError("unreachable")  # st.stop() raises; this keeps type checkers honest


# ------------------------------------------------------------------------------------ the prologue


@dataclass(frozen=True)
class PageContext:
    """What every page starts from: the sidebar's choices, the loaded classifier, its top classes
    and the image as the classifier sees it."""

    model_id: str
    device: str
    png: bytes  # the image as PNG bytes (the cache key)
    image_name: str
    clf: explainers.Classifier
    top: list[tuple[int, str, float]]  # (class index, label, probability), best first
    seen: np.ndarray  # RGB uint8 (H, W, 3) at the classifier's input size


SMALL_FACTOR = 3.0  # warn when the classifier's input is this many times larger than the image
WIDE_RATIO = 3.0  # warn when one side of the image is this many times the other


def input_warning(size: tuple[int, int], clf: explainers.Classifier) -> str:
    """One line when the image is much smaller than the classifier's input or of an extreme aspect
    ratio (it is still classified), else ""."""
    w, h = size
    ih, iw = clf.input_size
    factor = min(ih, iw) / max(1, min(w, h))
    notes = []
    if factor >= SMALL_FACTOR:
        notes.append(f"the image ({w}×{h}) is {factor:.0f}× smaller than what {clf.id} reads ({iw}×{ih}): it is "
                     "upscaled, so the classifier sees interpolation, not detail")
    ratio = max(w, h) / max(1, min(w, h))
    if ratio >= WIDE_RATIO:
        how = "the centre crop keeps part of it" if clf.resize is not None else "it is squashed to the input's shape"
        notes.append(f"its aspect ratio is {ratio:.0f}:1 ({how})")
    return ("Take the prediction with care: " + "; ".join(notes) + ".") if notes else ""


def seen_image(model_id: str, device: str, png: bytes) -> np.ndarray:
    """The image as the classifier sees it (resized, cropped), RGB uint8 (one small resize: not cached)."""
    clf = cache.classifier(model_id, device)
    return plots.to_uint8(clf.pixels(cache.decode_image(png)).numpy())


def prologue(topk: int = 5) -> PageContext:
    """The shared start of a page: stops with an info box when the sidebar has no usable classifier
    or image, and with one error line when loading or predicting fails."""
    ctx = sidebar.require()
    try:
        clf = cache.classifier(ctx.model_id, ctx.device)
        top = cache.predict(ctx.model_id, ctx.device, ctx.png, topk)
        seen = seen_image(ctx.model_id, ctx.device, ctx.png)
        warning = input_warning(cache.decode_image(ctx.png).size, clf)
    except ExplainerError as e:
        stop(e)
    if warning:
        st.warning(warning, icon=":material/photo_size_select_small:")
    return PageContext(ctx.model_id, ctx.device, ctx.png, ctx.image_name, clf, top, seen)


def sidebar_device() -> str:
    """The sidebar's device (for pages, like the tour, that bring their own image)."""
    ctx = st.session_state.get("ctx")
    return ctx.device if ctx is not None else "cpu"


# ------------------------------------------------------------------------------------ progress


def with_progress(label: str, call: Callable[[Callable], T]) -> T:
    """``call(progress)`` in the script with an ``st.progress`` bar drawn where this is called, for
    short work (long work goes through ``ui.work``).

    ``progress(done, total, message)`` is the engine's callback: the bar shows the share done and,
    after a second of work, the time left at the rate so far. The bar is removed when ``call``
    returns or raises (a cache hit never reports, so it only flashes).
    """
    bar = st.progress(0.0, text=label)
    start = time.monotonic()

    def progress(done: int, total: int, message: str = "", partial: Any = None) -> None:
        share = min(1.0, done / max(total, 1))
        text = f"{label} {message}".strip() + f" · {share:.0%}"
        elapsed = time.monotonic() - start
        if 0 < done < total and elapsed > 1.0:
            text += f" · about {work.duration(elapsed * (total - done) / done)} left"
        bar.progress(share, text=text)

    try:
        return call(progress)
    finally:
        bar.empty()


def expected(model_id: str, device: str, method: str, params: dict) -> tuple[str, float, str]:
    """(one line saying what a run will cost here, its expected seconds, why it cannot run or "")."""
    c, seconds = cache.cost(model_id, device, method, cache.frozen(params))
    line = f"Expected: about {work.duration(seconds)} on {device} ({c.work}{'; ' + c.detail if c.detail else ''})"
    return line, seconds, c.blocked


def explanation(model_id: str, device: str, png: bytes, method: str, params: dict[str, Any], target: Optional[int] = None,
                label: str = "", slot: Optional[str] = None, where: Any = None, show_cost: bool = False,
                draw_partial: Optional[Callable[[Any], None]] = None) -> work.Outcome:
    """A result under the long-work rule (``ui.work``): from the caches when they have it, else
    computed in a thread (on a click when it is expected to take over ``work.LONG_SECONDS``).
    ``slot``: where on the page the result goes (a new request there cancels the old one; default:
    one slot per request). A run that cannot start (a fit is missing) fails at once with its reason."""
    label = label or METHODS[method].title
    frozen = cache.frozen(params)
    key = cache.request_key(model_id, device, png, method, frozen, target)
    slot = slot or f"explain.{hashlib.sha256(repr(key).encode()).hexdigest()[:12]}"
    ready = lambda: cache.lookup(model_id, device, png, method, frozen, target, key)  # noqa: E731

    def estimate() -> float:
        line, seconds, blocked = expected(model_id, device, method, params)
        if blocked:
            raise ExplainerError(blocked)
        if show_cost:
            (where or st).caption(line)
        return seconds

    clf, image = cache.classifier(model_id, device), cache.decode_image(png)
    try:
        out = work.run(slot, key, label, lambda p: cache.compute(clf, image, method, frozen, target, p), estimate,
                       ready=ready, where=where, memo=False, draw_partial=draw_partial)
    except ExplainerError as e:
        return work.Outcome("failed", error=e)
    job = work.jobs().get(slot)
    if out.ok and job is not None and job.key == key and job.state == "done":
        fresh = not job.result.meta.get("cached", False)
        if out.result is not job.result:
            out.result.meta["cached"] = not fresh  # computed by this session's job
        if fresh and not job.learned:
            job.learned = True
            cache.learn(model_id, device, method, job.estimate or 0.0, float(job.result.meta.get("seconds", 0.0)))
    return out


def explain(model_id: str, device: str, png: bytes, method: str, params: dict[str, Any], target: Optional[int] = None,
            label: str = "", slot: Optional[str] = None, where: Any = None) -> Optional[Explanation]:
    """:func:`explanation`'s result; None while it waits for a click or after a Stop (the slot says
    which); raises the failure (``ExplainerError`` for the user's input)."""
    out = explanation(model_id, device, png, method, params, target, label, slot, where)
    if out.state == "failed":
        raise out.error
    return out.result if out.ok else None


def explain_or_stop(pc: PageContext, method: str, params: dict[str, Any], target: Optional[int] = None,
                    label: str = "", slot: Optional[str] = None) -> Explanation:
    """:func:`explanation` for the page's classifier and image, with its cost shown; anything but a
    result stops the page (a bad input with one line; a stopped run after drawing its partial maps)."""
    slot = slot or f"page.{method}"
    out = explanation(pc.model_id, pc.device, pc.png, method, params, target, label, slot, show_cost=True,
                      draw_partial=lambda part: show_partial(pc, method, part, running=True))
    if out.ok:
        return out.result
    if out.state == "failed":
        stop(out.error)
    if out.partial is not None:
        show_partial(pc, method, out.partial)
    st.stop()
    raise AssertionError("unreachable")


def partial_maps(partial: Any) -> dict[str, np.ndarray]:
    """The maps in a partial result the engine reported (an ``Explanation``, a ``MethodOutput`` or a dict)."""
    maps = getattr(partial, "maps", partial)
    if not isinstance(maps, dict):
        return {}
    return {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v, dtype=np.float32)
            for k, v in maps.items() if np.ndim(v) == 2}


def show_partial(pc: PageContext, method: str, partial: Any, running: bool = False, first_only: bool = False) -> None:
    """Draw the maps of a partial result (a stopped run's, or a running one's latest), labelled as such;
    blank pixels are those not final yet. ``first_only``: just its first map (a narrow grid cell)."""
    spec = METHODS[method]
    maps = partial_maps(partial)
    if first_only:
        maps = dict(list(maps.items())[:1])
    cols = st.columns(max(1, len(maps))) if len(maps) > 1 else [st.container()]
    for col, (name, arr) in zip(cols, maps.items()):
        with col:
            chart(plots.map_figure(pc.seen, arr, spec.maps.get(name, "signed"), spec.units.get(name, ""),
                                  f"{name} · partial{' (so far)' if running else ''}"))


def show_maps(image: Optional[np.ndarray], items: list[tuple[np.ndarray, str, str, str]], shared: bool = True,
              height: int = 320, keys: str = "") -> None:
    """Maps side by side, one column each: ``items`` are (map, kind, unit, title). With ``shared``,
    maps of the same unit get one symmetric colour scale (``plots.shared_peak``); a nearly-zero map
    gets its note under it."""
    scales: dict[str, float] = {}
    if shared:
        for unit in {u for _, _, u, _ in items}:
            group = [a for a, k, u, _ in items if u == unit and k != "mask"]
            if len(group) > 1:
                scales[unit] = plots.shared_peak(group)
    for i, (col, (arr, kind, unit, title)) in enumerate(zip(st.columns(len(items)), items)):
        with col:
            chart(plots.map_figure(image, arr, kind, unit, title, height=height, scale=scales.get(unit)), key=f"{keys}map.{i}" if keys else None)
            note = plots.near_zero(arr, unit)
            if note:
                st.caption(f":warning: {note}")
    if scales:
        st.caption("Maps in the same unit share one colour scale: " + ", ".join(f"{u} ±{v:.3g}" for u, v in scales.items()) + ".")


def chart(fig: Any, key: Optional[str] = None, where: Any = st) -> None:
    """A figure without plotly's mode bar (it covered the titles; the page has its own exports)."""
    where.plotly_chart(fig, width="stretch", key=key, config={"displayModeBar": False})


# ------------------------------------------------------------------------------------ engine calls


def infills(model_id: str, device: str, png: bytes, box_xy: tuple[int, int], K: int, N: int, sampler: str,
            value: float = 0.5, seed: int = 0) -> dict[str, np.ndarray]:
    """N in-fills of the K×K patch at ``box_xy`` and the neighbourhood they see (PMI, Fig. 14).
    (Not cached: the fitted sampler files are not in the key.)"""
    from explainers.methods.samplers import infills as draw

    clf = cache.classifier(model_id, device)
    return draw(clf, clf.pixels(cache.decode_image(png)), box_xy, K=K, N=N, sampler=sampler, seed=seed, value=value)


@st.cache_data(max_entries=8, show_spinner=False)
def _sample_regions() -> dict[bytes, tuple]:
    from explainers.data import samples

    return {cache.image_bytes(s.image): (s.mask, s.box) for s in samples() if s.mask is not None or s.box is not None}


def region_for(png: bytes, clf) -> Optional[np.ndarray]:
    """The object's mask (bool, at the classifier's input size, transformed as the image is) when
    the image is a built-in sample with one; None for an uploaded image."""
    region = _sample_regions().get(png)
    if region is None:
        return None
    return evaluation.object_mask(clf, cache.decode_image(png), *region)


METRIC_STEPS = 32


def map_metrics(clf, x, saliency: np.ndarray, target: int, region: Optional[np.ndarray], steps: int = METRIC_STEPS,
                progress: Optional[Callable] = None) -> dict:
    """Deletion and insertion curves and every metric of one map on one image (for a worker thread)."""
    def step(k: int) -> None:
        if progress is not None:
            progress(k, 4, "metrics")

    step(0)
    fd, pd = metrics.deletion_curve(clf, x, saliency, target, steps=steps)
    step(1)
    fi, pi = metrics.insertion_curve(clf, x, saliency, target, steps=steps)
    step(2)
    out = {"deletion_curve": (fd, pd), "insertion_curve": (fi, pi), "deletion AUC ↓": metrics.auc(fd, pd),
           "insertion AUC ↑": metrics.auc(fi, pi), "M_F % ↑": metrics.m_f(clf, x, saliency, target)}
    step(3)
    out["KL (VarSal) ↓"] = metrics.kl_auc(clf, x, saliency)
    if region is not None:
        out["pointing game"] = "hit" if metrics.pointing_game(saliency, region) else "miss"
        out["M_I % ↑"] = metrics.m_i(saliency, region)
        out["box accuracy ↑"] = metrics.bbox_accuracy(saliency, region)
    step(4)
    return out


def image_metrics(pc: PageContext, result: Explanation, name: str, region: Optional[np.ndarray], slot: str) -> Optional[dict]:
    """:func:`map_metrics` of one map of ``result`` under the long-work rule (about four deletion-
    curve's worth of forwards); None while it waits for a click or after a Stop."""
    target = int(result.meta["target"])
    key = ("metrics", result.meta.get("image_sha"), result.meta["model"], pc.device, result.meta["method"],
           repr(sorted(result.meta["params"].items())), target, name, METRIC_STEPS, region is not None)
    seconds = (4 * (METRIC_STEPS + 1) + 12) / cache.rates(pc.model_id, pc.device).forward
    x = pc.clf.pixels(cache.decode_image(pc.png))
    arr = result.maps[name]
    out = work.run(slot, key, f"metrics of {result.meta['method']} · {name}",
                   lambda p: map_metrics(pc.clf, x, arr, target, region, progress=p), seconds)
    if out.state == "failed":
        raise out.error
    return out.result if out.ok else None


def results_path(model_id: str, data: str, method: str, metric_names: list[str], params: dict) -> Path:
    """Where the Faithfulness page keeps a dataset run's rows (resumed by the next click with the same settings)."""
    from explainers.data import cache_dir

    key = hashlib.sha256(repr((model_id, data, method, sorted(metric_names), sorted(params.items()))).encode()).hexdigest()[:12]
    return cache_dir().parent / "runs" / f"{model_id}_{data}_{method}_{key}.jsonl"


def run_dataset(clf, model_id: str, data: str, method: str, metric_names: list[str], limit: int, params: dict,
                progress: Optional[Callable] = None) -> dict:
    """The metrics of ``method`` on the first ``limit`` test images of ``data``: means and 95% CIs
    (for a worker thread: ``clf`` is the loaded classifier)."""
    from explainers.data import load_dataset

    ds = load_dataset(data, "test", limit=limit)
    rows = evaluation.evaluate(clf, ds, method, metric_names, results_path(model_id, data, method, metric_names, params),
                               params, limit=limit, progress=progress)
    return evaluation.summarise(rows, metric_names)


def dataset_seconds(pc: PageContext, method: str, limit: int) -> float:
    """Expected seconds of a dataset run: per image, the method and about four deletion curves."""
    _, per_image, _ = expected(pc.model_id, pc.device, method, {})
    return limit * (per_image + (4 * (METRIC_STEPS + 1)) / cache.rates(pc.model_id, pc.device).forward)
