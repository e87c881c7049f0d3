"""The one config layer: knob metadata, the parser used by explain, the CLI and the fitters."""
from dataclasses import dataclass, field
from typing import Optional

import pytest

from explainers.config import knob, parse
from explainers.errors import ExplainerError


@dataclass(frozen=True)
class Inner:
    eta: float = knob(1.5, "η", min=0.0, max=5.0)
    kind: str = knob("a", "which", choices=("a", "b"))

    def __post_init__(self):
        if self.eta < 0:
            raise ExplainerError("eta must be >= 0")


@dataclass(frozen=True)
class Outer:
    steps: int = knob(10, "steps", min=1)
    limit: Optional[int] = knob(None, "images", auto="all")
    flag: bool = knob(False, "a flag")
    sizes: tuple[int, ...] = knob((1, 2), "sizes")
    method: Inner = field(default_factory=Inner)


def test_strings_are_read_as_the_fields_types_and_routed_to_the_nested_config():
    c = parse(Outer, {"steps": "3", "limit": "all", "flag": "yes", "sizes": "4,5", "eta": "2", "kind": "b"})
    assert c == Outer(steps=3, limit=None, flag=True, sizes=(4, 5), method=Inner(eta=2.0, kind="b"))
    assert parse(Outer, {"limit": "7"}).limit == 7 and parse(Outer, {"limit": ""}).limit is None
    assert parse(Outer, {"eta": 2}).method.eta == 2.0 and isinstance(parse(Outer, {"eta": 2}).method.eta, float)


@pytest.mark.parametrize("params, words", [
    ({"bogus": 1}, "unknown parameter 'bogus' for thing"), ({"steps": "x"}, "cannot read"),
    ({"flag": "maybe"}, "cannot read"), ({"kind": "c"}, "not one of a, b"), ({"eta": "-1"}, "eta must be >= 0"),
])
def test_bad_values_are_one_line_errors(params, words):
    with pytest.raises(ExplainerError, match=words) as e:
        parse(Outer, params, owner="thing")
    assert "\n" not in str(e.value)


def test_knob_keeps_zero_bounds_and_drops_empty_metadata():
    f = Inner.__dataclass_fields__["eta"]
    assert f.metadata["min"] == 0.0 and f.metadata["max"] == 5.0 and "choices" not in f.metadata
    assert Outer.__dataclass_fields__["limit"].metadata["auto"] == "all"
