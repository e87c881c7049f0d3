"""One module per explanation method; importing this package registers them all.

Adding a method: write ``explainers/methods/<name>.py`` (a frozen dataclass config, a ``run``
function, a ``register(MethodSpec(...))`` call) and add one import line below.
"""
# fmt: off
# ruff: noqa: F401
# (method modules are added below, one line each)
from . import baselines
from . import varsal
from . import pmi
from . import mipin
from . import dcontrol
from . import dssr
