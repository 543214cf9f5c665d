"""The run configuration: its typed fields (:mod:`~metacompare.config.runconfig`), reading files and
overrides into them (:mod:`~metacompare.config.loading`), and every check of a config against the
registered plug-ins (:mod:`~metacompare.config.validation`).

``metacompare.config.load_experiment`` and the other names of ``loading`` resolve here too, imported on
first use: ``loading`` needs the algorithm registry, which itself needs ``runconfig`` from this package.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any


def __getattr__(name: str) -> Any:
    if name.startswith("__") or importlib.util.find_spec(f"{__name__}.{name}") is not None:
        raise AttributeError(name)  # a submodule (runconfig, ...): let the import system load it
    return getattr(importlib.import_module(f"{__name__}.loading"), name)
