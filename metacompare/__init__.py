"""metacompare: which meta-learning algorithm should I use on this data and budget?

The Python API is `metacompare.api` (``from metacompare.api import compare, inspect, run``). Its
names are also attributes of this package, loaded on first use so that ``import metacompare`` stays
light. Modules that moved into the package's folders keep their old import paths for one release
(:mod:`metacompare._moved`).
"""

from __future__ import annotations

from typing import Any

from metacompare import _moved

_moved.install()

# The API names this package offers (metacompare.api.__all__).
__all__ = ["Comparison", "compare", "ConfigError", "DataError", "Experiment", "MetaAlgorithm", "Objective", "RunConfig", "Task",
           "TaskGradient",
           "UserError", "algorithm_names", "inspect", "load_comparison", "load_config", "load_results", "register",
           "run", "write_report"]


def __getattr__(name: str) -> Any:
    """``metacompare.run`` and the other API names, imported from `metacompare.api` when first asked for."""
    if name in __all__:
        from metacompare import api

        return getattr(api, name)
    raise AttributeError(f"module 'metacompare' has no attribute {name!r}")
