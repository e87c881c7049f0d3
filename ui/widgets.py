"""Widgets built from a method's config, the PMI controls, and the target-class picker.

A config field declared with ``explainers.config.knob`` carries what its widget needs (``help``,
``choices``, ``min``/``max``/``step``, ``symbol``, ``auto``, ``advanced``); a field without that
metadata still gets a widget from its type and default. The defaults always come from the config,
so no page repeats them.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Iterable, Optional

import streamlit as st

from explainers.core import get_method
from explainers.methods.pmi import PMIConfig
from explainers.methods.samplers import SAMPLERS, STOCHASTIC, patch_boxes

SKIP = object()  # field_widget's answer for a field it cannot draw (no default, a tuple, ...)


def _base_type(typ: Any) -> tuple[Any, bool]:
    """(the type, whether None is allowed) of a field's annotation."""
    args = typing.get_args(typ)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else Any), True
    return typ, False


def field_widget(f: dataclasses.Field, typ: Any, key: str, where: Any = st, label: Optional[str] = None,
                 fallback: Optional[dict] = None) -> Any:
    """One widget for one config field, in ``where`` (``st`` or a column); returns its value.

    A select box when the field has ``choices``, a slider when it has both ``min`` and ``max``, a
    number input otherwise (also for a range whose default is ``None``: a slider cannot show
    "automatic", the empty number input shows the field's ``auto`` word instead). ``fallback``
    supplies ``min``/``max``/``step``/``help`` the field's metadata lacks.
    """
    d = f.default
    if d is dataclasses.MISSING:
        return SKIP
    meta = {**(fallback or {}), **f.metadata}
    base, optional = _base_type(typ)
    symbol, auto = meta.get("symbol"), meta.get("auto")
    label = label or (f"{f.name} ({symbol})" if symbol and symbol != f.name else f.name)
    helptext = meta.get("help") or None
    choices = meta.get("choices")
    if choices:
        options = list(choices) + ([None] if d is None and None not in choices else [])
        options.sort(key=lambda o: o is not None)  # "automatic" first
        return where.selectbox(label, options, index=options.index(d) if d in options else 0, key=key, help=helptext,
                               format_func=lambda o: (auto or "default") if o is None else str(o))
    if base is bool or isinstance(d, bool):
        return where.checkbox(label, value=bool(d), key=key, help=helptext)
    if base in (int, float) or (isinstance(d, (int, float)) and base is Any):
        integer = base is int or (base is Any and isinstance(d, int))
        cast = int if integer else float
        lo, hi, step = meta.get("min"), meta.get("max"), meta.get("step")
        lo, hi = (None if lo is None else cast(lo)), (None if hi is None else cast(hi))
        step = cast(step) if step is not None else (1 if integer else None)
        if d is not None and lo is not None and hi is not None and lo <= d <= hi:
            return where.slider(label, lo, hi, cast(d), step, key=key, help=helptext)
        v = where.number_input(label, min_value=lo, max_value=hi, value=None if d is None else cast(d), step=step,
                               format=None if integer else "%g", key=key, help=helptext,
                               placeholder=auto or ("automatic" if d is None else None))
        return None if v is None else cast(v)
    if base is str or isinstance(d, str) or (d is None and base is Any):
        text = where.text_input(label, value="" if d is None else d, key=key, help=helptext,
                                placeholder=auto or ("empty = default" if d is None else None))
        return None if (optional or d is None) and text == "" else text
    return SKIP


def config_widgets(method: str, skip: Iterable[str] = (), key: str = "") -> dict[str, Any]:
    """One input per field of ``method``'s config (see :func:`field_widget`); fields marked
    ``advanced`` appear behind a checkbox. Widget keys are ``{key}{method}.{field}``.

    Returns only the values the user changed from the defaults, so cache keys stay short and a
    method's defaults remain the single source of truth.
    """
    return config_inputs(get_method(method).config, skip=skip, key=f"{key}{method}.")


def config_inputs(config: type, skip: Iterable[str] = (), key: str = "") -> dict[str, Any]:
    """:func:`config_widgets` for a config class; widget keys are ``{key}{field}``."""
    hints = typing.get_type_hints(config)
    fields = [f for f in dataclasses.fields(config) if f.name not in set(skip) and f.default is not dataclasses.MISSING]
    main = [f for f in fields if not f.metadata.get("advanced")]
    extra = [f for f in fields if f.metadata.get("advanced")]
    if extra and st.checkbox("show the advanced settings", key=f"{key}advanced", help=", ".join(f.name for f in extra)):
        main += extra
    out: dict[str, Any] = {}
    for f in main:
        v = field_widget(f, hints.get(f.name, Any), f"{key}{f.name}")
        if v is not SKIP and v != f.default:
            out[f.name] = v
    return out


# ------------------------------------------------------------------------------------ PMI

SAMPLER_HELP = (
    "patchsampler: the paper's PatchSampler (fitted for K = 8); gaussian: PDA's conditional Gaussian; "
    "blur / mean: in-fills from the surrounding ring; noise: uniform; constant: a grey level"
)
LARGE_RUN = 6000  # forwards above which the page asks before running


def pmi_controls(input_size: tuple[int, int], key: str = "pmi") -> dict[str, Any]:
    """Sliders for K, N, stride, the sampler (and its grey level); returns the params. Asks before
    a run of more than ``LARGE_RUN`` forwards (and stops the page until the user agrees)."""
    side = min(input_size)
    meta = {f.name: f.metadata for f in dataclasses.fields(PMIConfig)}
    d = PMIConfig()
    c1, c2, c3, c4 = st.columns(4)
    K = c1.slider("K (patch side)", max(2, int(meta["K"].get("min", 2))), min(int(meta["K"].get("max", 32)), side), min(d.K, side),
                  key=f"{key}.K", help=meta["K"].get("help", "patches are K×K pixels; each is in-filled given its 3K×3K neighbourhood"))
    N = c2.slider("N (in-fills per patch)", int(meta["N"].get("min", 1)), int(meta["N"].get("max", 64)), d.N, key=f"{key}.N",
                  help=meta["N"].get("help", "Monte-Carlo samples of Eq. 3"))
    stride = c3.slider("stride S", 1, K, min(d.stride, K), key=f"{key}.stride", help=meta["stride"].get("help", "smaller = finer and slower"))
    sampler = c4.selectbox("sampler", SAMPLERS, index=SAMPLERS.index(d.sampler), key=f"{key}.sampler", help=SAMPLER_HELP)
    params: dict[str, Any] = {"K": K, "N": N, "stride": stride, "sampler": sampler}
    if sampler == "constant":
        params["value"] = st.slider("grey level", 0.0, 1.0, d.value, 0.05, key=f"{key}.value", help=meta["value"].get("help"))
    h, w = input_size
    forwards = len(patch_boxes(h, w, K, stride)) * (N if sampler in STOCHASTIC else 1)
    st.caption(f"{forwards:,} classifier forwards")
    if forwards > LARGE_RUN and not st.toggle(f"run anyway ({forwards:,} forwards may take minutes)", key=f"{key}.go"):
        st.info("Raise the stride or lower N for a quick look, or switch the toggle on.")
        st.stop()
    return params


# ------------------------------------------------------------------------------------ classes


def target_picker(top: list[tuple[int, str, float]], key: str = "target", label: str = "Class to explain", index: int = 0) -> Optional[int]:
    """A select box over the top classes; returns the chosen class index."""
    options = [i for i, _, _ in top]
    names = {i: f"{lab} ({p:.1%})" for i, lab, p in top}
    return st.selectbox(label, options, index=min(index, len(options) - 1), format_func=names.get, key=key)
