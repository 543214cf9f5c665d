"""The algorithm registry: ``ALGORITHMS[name]`` is a :class:`MetaAlgorithm` subclass.

Adding an algorithm: one module here with a class decorated by :func:`register`, one import line
below, and a test.
"""

from __future__ import annotations

from metacompare.backends import BACKENDS

ALGORITHMS: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if cls.name in ALGORITHMS:
        raise ValueError(f"algorithm '{cls.name}' is registered twice")
    ALGORITHMS[cls.name] = cls
    return cls


def build_algorithm(model, cfg):
    """The configured algorithm, wrapped around ``model``."""
    return ALGORITHMS[cfg.algorithm](model, cfg)


from metacompare.algorithms import fomaml, maml, reptile  # noqa: E402,F401  (registration)

__all__ = ["ALGORITHMS", "BACKENDS", "register", "build_algorithm"]
