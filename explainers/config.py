"""One config layer: how a method's (or a fitter's) knobs are declared, read and validated.

A config is a frozen dataclass. Each field is declared with :func:`knob`, which keeps what a
user interface needs beside the default — the help text (naming the paper's symbol and default),
the choices, the range and step — so no page hard-codes a default or a range:

    @dataclass(frozen=True)
    class MyConfig:
        K: int = knob(8, "patch size K (paper: 8)", choices=(4, 8), symbol="K")
        lam: Optional[float] = knob(None, "weight λ; empty = automatic", min=0.0, max=1.0, auto="auto")

:func:`parse` is the one parser used by ``explain``, the command line and the fitters: it turns
strings (as from ``--set key=value``) into the fields' types, refuses unknown names and bad values
with one line, and runs the dataclass's own ``__post_init__`` checks. A training config nests its
method's config (a field whose type is another config dataclass) instead of repeating its fields;
``parse`` routes each name to the config that owns it.

Imports nothing from the package but ``errors``.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Optional

from .errors import ExplainerError

_MISSING = dataclasses.MISSING


def knob(
    default: Any,
    help: str = "",
    *,
    choices: Optional[tuple] = None,
    min: Optional[float] = None,
    max: Optional[float] = None,
    step: Optional[float] = None,
    symbol: Optional[str] = None,
    auto: Optional[str] = None,
    advanced: bool = False,
) -> Any:
    """A config field with the metadata a widget needs.

    ``choices``: the only values allowed (a select box); ``min``/``max``/``step``: the range of a
    number (a slider when both ends are given); ``symbol``: the paper's name for it; ``auto``: how
    to show ``None`` when ``None`` means "chosen automatically"; ``advanced``: kept out of the
    main controls. Mutable defaults (tuples are fine) are not allowed.
    """
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None, "min": min, "max": max,
            "step": step, "symbol": symbol, "auto": auto, "advanced": advanced}
    return dataclasses.field(default=default, metadata={k: v for k, v in meta.items() if not (v is None or v is False or v == "")})


def fields(config: type) -> list[dataclasses.Field]:
    """The fields of a config class (its knobs), in declaration order."""
    return list(dataclasses.fields(config))


def nested(config: type) -> dict[str, type]:
    """Fields whose value is itself a config dataclass (a training config nesting its method's)."""
    hints = typing.get_type_hints(config)
    return {f.name: hints[f.name] for f in dataclasses.fields(config)
            if isinstance(hints.get(f.name), type) and dataclasses.is_dataclass(hints[f.name])}


def parse(config: type, params: dict[str, Any], owner: str = "") -> Any:
    """Build ``config`` from ``params`` (strings are read as the fields' types); one-line errors.

    Names belonging to a nested config are routed to it; ``owner`` names the method or fitter in
    messages.
    """
    owner = owner or config.__name__
    hints = typing.get_type_hints(config)
    own = {f.name: f for f in dataclasses.fields(config)}
    inner = nested(config)
    routed: dict[str, dict[str, Any]] = {n: {} for n in inner}
    values: dict[str, Any] = {}
    for k, v in params.items():
        if k in own and k not in inner:
            values[k] = coerce(k, v, hints[k], own[k])
            continue
        home = [n for n, c in inner.items() if k in {f.name for f in dataclasses.fields(c)}]
        if k in inner and isinstance(v, inner[k]):
            values[k] = v
        elif home:
            routed[home[0]][k] = v
        else:
            known = [n for n in own if n not in inner] + [f.name for c in inner.values() for f in dataclasses.fields(c)]
            raise ExplainerError(f"unknown parameter {k!r} for {owner}; known: {', '.join(dict.fromkeys(known))}")
    for n, sub in routed.items():
        if sub or n not in values:
            base = values.get(n) or _default(own[n])
            merged = {**(dataclasses.asdict(base) if base is not None else {}), **sub}
            values[n] = parse(inner[n], merged, owner)
    try:
        return config(**values)
    except ExplainerError:
        raise
    except (TypeError, ValueError) as e:
        raise ExplainerError(f"{owner}: {e}") from None


def _default(f: dataclasses.Field) -> Any:
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def coerce(name: str, value: Any, typ: Any, f: Optional[dataclasses.Field] = None) -> Any:
    """Read ``value`` as ``typ`` (int, float, bool, str, Optional[...], tuple); non-strings pass,
    except that an int is accepted for a float field. For an Optional field, "none", "" and the
    field's ``auto`` word read as None. Choices in the field's metadata are enforced."""
    out = _read(name, value, typ, f.metadata.get("auto") if f is not None else None)
    choices = f.metadata.get("choices") if f is not None else None
    if choices is not None and out is not None and out not in choices:
        raise ExplainerError(f"parameter {name}: {out!r} is not one of {', '.join(map(str, choices))}")
    return out


def _read(name: str, value: Any, typ: Any, auto: Optional[str] = None) -> Any:
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    optional = type(None) in args
    if optional:
        rest = [a for a in args if a is not type(None)]
        nones = ("none", "", (auto or "none").lower())
        if value is None or (isinstance(value, str) and value.strip().lower() in nones):
            return None
        typ = rest[0] if len(rest) == 1 else typ
        origin, args = typing.get_origin(typ), typing.get_args(typ)
    if not isinstance(value, str):
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value
    text = value.strip()
    try:
        if typ is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ is int:
            return int(text)
        if typ is float:
            return float(text)
        if origin is tuple:
            inner = args[0] if args else str
            parts = [p for p in text.strip("()[] ").split(",") if p.strip()]
            return tuple(_read(name, p, inner) for p in parts)
    except ValueError:
        raise ExplainerError(f"parameter {name}: cannot read {value!r} as {getattr(typ, '__name__', typ)}") from None
    return value
