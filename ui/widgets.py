"""Widgets built from a method's config dataclass, and the target-class picker."""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Optional

import streamlit as st

from explainers.core import get_method


def config_widgets(method: str, skip: Iterable[str] = (), key: str = "") -> dict[str, Any]:
    """One input per config field (numbers, booleans, choices from ``field.metadata['choices']``).

    Returns only the values the user changed from the defaults, so cache keys stay short and a
    method's defaults remain the single source of truth.
    """
    spec = get_method(method)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(spec.config):
        if f.name in skip or f.default is dataclasses.MISSING:
            continue
        d, k, helptext = f.default, f"{key}{method}.{f.name}", f.metadata.get("help")
        choices = f.metadata.get("choices")
        if choices:
            v = st.selectbox(f.name, list(choices), index=list(choices).index(d) if d in choices else 0, key=k, help=helptext)
        elif isinstance(d, bool):
            v = st.checkbox(f.name, value=d, key=k, help=helptext)
        elif isinstance(d, int):
            v = int(st.number_input(f.name, value=d, step=1, key=k, help=helptext))
        elif isinstance(d, float):
            v = float(st.number_input(f.name, value=d, format="%g", key=k, help=helptext))
        elif d is None or isinstance(d, str):
            text = st.text_input(f.name, value="" if d is None else d, key=k, help=helptext or "empty = default")
            v = (None if text == "" else text) if d is None else text
        else:
            continue
        if v != d:
            out[f.name] = v
    return out


def target_picker(top: list[tuple[int, str, float]], key: str = "target", label: str = "Class to explain", index: int = 0) -> Optional[int]:
    """A select box over the top classes; returns the chosen class index."""
    options = [i for i, _, _ in top]
    names = {i: f"{lab} ({p:.1%})" for i, lab, p in top}
    return st.selectbox(label, options, index=min(index, len(options) - 1), format_func=names.get, key=key)
