"""Widgets built from a method's config, the PMI controls, the target-class picker, and keeping
widget values across pages.

A config field declared with ``explainers.config.knob`` carries what its widget needs (``help``,
``choices``, ``min``/``max``/``step``, ``symbol``, ``auto``, ``advanced``); a field without that
metadata still gets a widget from its type and default. The defaults always come from the config,
so no page repeats them.

Values survive a visit to another page: every widget made here gets its value from session state
(:func:`remember` sets the default once, and drops a value its widget no longer offers) and is made
with Streamlit's ``persist_state="session"`` (:func:`kept` gives both). Values that belong to one
classifier or image (the class boxes) are dropped by :func:`forget_context` when either changes.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, Callable, Iterable, Optional

import streamlit as st

from explainers import fitted
from explainers.core import get_method
from explainers.methods.pmi import PMIConfig
from explainers.methods.samplers import DEFAULT_K, SAMPLERS, sampler_key

SKIP = object()  # field_widget's answer for a field it cannot draw (no default, a tuple, ...)
_CONTEXT = "widgets.context"  # those that belong to the current classifier and image


# ------------------------------------------------------------------------------------ state


def remember(key: str, default: Any, valid: Optional[Callable[[Any], bool]] = None, context: bool = False) -> str:
    """Give the widget ``key`` its default once (or again when its value is no longer ``valid``);
    ``context``: drop it when the classifier or image changes. Returns ``key``."""
    state = st.session_state
    if key not in state or (valid is not None and not valid(state[key])):
        state[key] = default
    if context:
        state.setdefault(_CONTEXT, set()).add(key)
    return key


def kept(key: str, default: Any, valid: Optional[Callable[[Any], bool]] = None, context: bool = False) -> dict[str, Any]:
    """The keyword arguments of a widget whose value survives other pages: its ``key`` (given its
    default once, see :func:`remember`) and Streamlit's ``persist_state="session"``."""
    return {"key": remember(key, default, valid, context), "persist_state": "session"}


def forget_context() -> None:
    """Drop the values that belong to the previous classifier or image (class boxes)."""
    state = st.session_state
    for key in state.get(_CONTEXT, set()):
        state.pop(key, None)
    state[_CONTEXT] = set()


# ------------------------------------------------------------------------------------ one field


def _base_type(typ: Any) -> tuple[Any, bool]:
    """(the type, whether None is allowed) of a field's annotation."""
    args = typing.get_args(typ)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else Any), True
    return typ, False


def _help(meta: dict, default: Any) -> Optional[str]:
    """The field's help; its default (and "automatic" for None) added when the text does not say it."""
    text = meta.get("help") or ""
    if "default" not in text and "paper" not in text:
        shown = meta.get("auto") or "automatic" if default is None else default
        text = f"{text} (default {shown})".strip()
    return text or None


def field_widget(f: dataclasses.Field, typ: Any, key: str, where: Any = st, label: Optional[str] = None,
                 fallback: Optional[dict] = None, default: Any = dataclasses.MISSING) -> Any:
    """One widget for one config field, in ``where`` (``st`` or a column); returns its value.

    A select box when the field has ``choices``, a slider when it has both ``min`` and ``max``, a
    number input otherwise (also for a range whose default is ``None``: a slider cannot show
    "automatic", the empty number input shows the field's ``auto`` word instead). ``fallback``
    supplies ``min``/``max``/``step``/``help`` the field's metadata lacks. The label names the
    paper's symbol; the help says the default. ``default`` replaces the field's default as the
    widget's starting value (the lighter settings of :func:`lighter`); such a widget gets its own key
    (``key + ".lighter"``), so going back to the config's default never keeps a lighter value; the
    help still names the config's.
    """
    if f.default is dataclasses.MISSING:
        return SKIP
    d = f.default if default is dataclasses.MISSING else default
    if d != f.default:
        key = f"{key}.lighter"
    meta = {**(fallback or {}), **f.metadata}
    base, optional = _base_type(typ)
    symbol, auto = meta.get("symbol"), meta.get("auto")
    label = label or (f"{f.name} ({symbol})" if symbol and symbol != f.name else f.name)
    helptext = _help(meta, f.default)
    if d != f.default:
        helptext = f"{helptext}; starts at {d} here, a lighter setting for this input size and device"
    choices = meta.get("choices")
    if choices:
        options = list(choices) + ([None] if d is None and None not in choices else [])
        options.sort(key=lambda o: o is not None)  # "automatic" first
        return where.selectbox(label, options, help=helptext, **kept(key, d if d in options else options[0], lambda v: v in options),
                               format_func=lambda o: (auto or "default") if o is None else str(o))
    if base is bool or isinstance(d, bool):
        return where.checkbox(label, help=helptext, **kept(key, bool(d), lambda v: isinstance(v, bool)))
    if base in (int, float) or (isinstance(d, (int, float)) and base is Any):
        integer = base is int or (base is Any and isinstance(d, int))
        cast = int if integer else float
        lo, hi, step = meta.get("min"), meta.get("max"), meta.get("step")
        lo, hi = (None if lo is None else cast(lo)), (None if hi is None else cast(hi))
        step = cast(step) if step is not None else (1 if integer else None)

        def inside(v: Any) -> bool:
            return isinstance(v, (int, float)) and (lo is None or v >= lo) and (hi is None or v <= hi)

        if d is not None and lo is not None and hi is not None and lo <= d <= hi:
            return where.slider(label, lo, hi, step=step, help=helptext, **kept(key, cast(d), inside))
        v = where.number_input(label, min_value=lo, max_value=hi, step=step, format=None if integer else "%g", help=helptext,
                               placeholder=auto or ("automatic" if d is None else None),
                               **kept(key, None if d is None else cast(d), lambda v: v is None or inside(v)))
        return None if v is None else cast(v)
    if base is str or isinstance(d, str) or (d is None and base is Any):
        text = where.text_input(label, help=helptext, placeholder=auto or ("empty = default" if d is None else None),
                                **kept(key, "" if d is None else d, lambda v: isinstance(v, str)))
        return None if (optional or d is None) and text == "" else text
    return SKIP


def config_widgets(method: str, skip: Iterable[str] = (), key: str = "", defaults: Optional[dict] = None) -> dict[str, Any]:
    """One input per field of ``method``'s config (see :func:`field_widget`); fields marked
    ``advanced`` appear behind a checkbox. Widget keys are ``{key}{method}.{field}``.

    Returns only the values that differ from the config's defaults, so cache keys stay short and a
    method's defaults remain the single source of truth. ``defaults`` (the lighter settings of
    :func:`lighter`) start their widgets elsewhere; those widgets get their own keys
    (``...{field}.lighter``), so ticking the paper's settings brings back the config's values.
    """
    return config_inputs(get_method(method).config, skip=skip, key=f"{key}{method}.", defaults=defaults)


def config_inputs(config: type, skip: Iterable[str] = (), key: str = "", defaults: Optional[dict] = None) -> dict[str, Any]:
    """:func:`config_widgets` for a config class; widget keys are ``{key}{field}``."""
    defaults = dict(defaults or {})
    hints = typing.get_type_hints(config)
    fields = [f for f in dataclasses.fields(config) if f.name not in set(skip) and f.default is not dataclasses.MISSING]
    main = [f for f in fields if not f.metadata.get("advanced")]
    extra = [f for f in fields if f.metadata.get("advanced")]
    if extra:
        if st.checkbox("show the advanced settings", help=", ".join(f.name for f in extra), **kept(f"{key}advanced", False)):
            main += extra
    out: dict[str, Any] = {f.name: defaults[f.name] for f in fields if f.name in defaults and f not in main}  # not drawn
    for f in main:
        v = field_widget(f, hints.get(f.name, Any), f"{key}{f.name}", default=defaults.get(f.name, dataclasses.MISSING))
        if v is not SKIP and v != f.default:
            out[f.name] = v
    return out


def lighter(pc: Any, methods: Iterable[str], where: Any = st) -> dict[str, dict]:
    """The settings that replace the papers' defaults for this input size and device
    (``explainers.cost.sized_defaults``: fewer iterations and forwards for 224-px inputs on a CPU),
    per method, and the one click back: a toggle for the papers' values, shown with what it changes.
    Returns ``{method: params}`` — empty dicts when the defaults stand or the toggle is on."""
    from explainers.cost import CPU_LARGE, sized_defaults

    sized = {m: sized_defaults(m, tuple(pc.clf.input_size), pc.device) for m in methods}
    found = {m: s for m, s in sized.items() if s[0]}
    out: dict[str, dict] = {m: {} for m in methods}
    if not found:
        return out
    h, w = pc.clf.input_size
    what = "; ".join(f"**{m}** {CPU_LARGE[m][1]}" for m in found)  # each method's own words
    paper = where.toggle("Paper's settings", help="the methods' own defaults (the papers' values): slower on this device",
                         **kept("lighter.paper", False, lambda v: isinstance(v, bool)))
    if paper:
        where.caption(f"The papers' settings, as the configs define them (slower for {w}×{h} on the {pc.device}).")
        return out
    where.caption(f":material/speed: Lighter settings for {w}×{h} on the {pc.device}: {what}. Maps made with them "
                  "can differ from the papers' (README, *Every method on a real ImageNet network*); the toggle "
                  "brings the papers' values back.")
    return {m: dict(found[m][0]) if m in found else {} for m in methods}


def help_for(config: type, name: str) -> Optional[str]:
    """The help of one field of ``config`` (naming the paper's symbol and default)."""
    f = config.__dataclass_fields__[name]
    return _help(dict(f.metadata), f.default)


def knob(config: type, name: str, key: str, where: Any = st, label: Optional[str] = None,
         default: Any = dataclasses.MISSING, **fallback: Any) -> Any:
    """The widget of one field of ``config`` (its range, help and default from the field; a
    ``default`` given here — a lighter setting — starts it elsewhere, under its own key)."""
    f = next(f for f in dataclasses.fields(config) if f.name == name)
    return field_widget(f, typing.get_type_hints(config)[name], key, where, label, fallback, default)


# ------------------------------------------------------------------------------------ PMI

K_ANY = (2, 3, 4, 6, 8, 12, 16, 24, 32)  # K offered for the samplers that need no fit
FITTED = ("patchsampler", "gaussian")


def fitted_K(kind: str, data: str) -> list[int]:
    """The K values a fitted ``kind`` sampler exists for, for the data key ``data`` (the user's fits
    and the committed ones, ``explainers.fitted``): read from the fits' JSON cards."""
    found: set[int] = set()
    for d in fitted.search_dirs(f"samplers/{data}"):
        for card in d.glob(f"{kind}*.json"):
            if card.with_suffix(".safetensors").exists():
                try:
                    found.add(int(json.loads(card.read_text()).get("config", {}).get("K", DEFAULT_K)))
                except (OSError, ValueError, TypeError):
                    continue
    return sorted(found)


def fit_command(data: str, K: int | str = "K") -> str:
    return f"python -m explainers fit --explainer patchsampler --data {data} --set K={K}"


def pmi_controls(clf, key: str = "pmi", defaults: Optional[dict] = None) -> dict[str, Any]:
    """Select boxes for the sampler and K (the fitted K values for the fitted samplers, with the
    command that fits another), sliders for N and the stride S; returns the params. ``defaults``
    (:func:`lighter`) start N and S elsewhere, under their own keys."""
    defaults = dict(defaults or {})
    side = min(clf.input_size)
    data = sampler_key(clf)
    d = PMIConfig()
    fits = {kind: fitted_K(kind, data) for kind in FITTED}

    def sampler_name(s: str) -> str:
        if s in FITTED:
            return f"{s} — fitted for K = {', '.join(map(str, fits[s]))}" if fits[s] else f"{s} — not fitted for {data}"
        return f"{s} — any K"

    c1, c2, c3, c4 = st.columns(4)
    sampler = knob(PMIConfig, "sampler", remember(f"{key}.sampler", d.sampler, lambda v: v in SAMPLERS), where=c1)
    c1.caption(sampler_name(sampler))
    options = [k for k in (fits[sampler] if sampler in FITTED else K_ANY) if k <= side] or [min(d.K, side)]
    K = c2.selectbox("K (patch side)", options, format_func=lambda k: f"{k} px",
                     **kept(f"{key}.K", d.K if d.K in options else options[-1], lambda v: v in options),
                     help=f"{PMIConfig.__dataclass_fields__['K'].metadata['help']}. "
                          + (f"Fitted samplers exist for K = {', '.join(map(str, options))} on {data}; fit another with "
                             f"`{fit_command(data)}`" if sampler in FITTED else "Any K works with this sampler."))
    n0, s0 = defaults.get("N", d.N), defaults.get("stride", d.stride)
    lighter_s = ".lighter" if s0 != d.stride else ""  # as field_widget keys a lighter N
    N = knob(PMIConfig, "N", f"{key}.N", where=c3, label="N (in-fills per patch)", default=n0)
    stride = c4.slider("stride S", 1, K, help=help_for(PMIConfig, "stride") + (f"; starts at {s0} here, a lighter setting" if lighter_s else ""),
                       **kept(f"{key}.stride{lighter_s}", min(s0, K), lambda v: isinstance(v, int) and 1 <= v <= K))
    params: dict[str, Any] = {"K": K, "N": N, "stride": stride, "sampler": sampler}
    if sampler == "constant":
        params["value"] = knob(PMIConfig, "value", remember(f"{key}.value", d.value), label="grey level")
    if sampler in FITTED:
        st.caption(f"Another K for the {sampler}: `{fit_command(data)}`")
    return params


# ------------------------------------------------------------------------------------ classes


def target_picker(top: list[tuple[int, str, float]], key: str = "target", label: str = "Class to explain", index: int = 0) -> Optional[int]:
    """A select box over the top classes; returns the chosen class index. Its value belongs to the
    classifier and image: it is dropped when either changes."""
    options = [i for i, _, _ in top]
    names = {i: f"{lab} ({p:.1%})" for i, lab, p in top}
    return st.selectbox(label, options, format_func=names.get, **kept(key, options[min(index, len(options) - 1)],
                                                                      lambda v: v in options, context=True))
