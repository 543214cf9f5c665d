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


def build_algorithm(model, cfg, num_classes: int | None = None):
    """The configured algorithm, wrapped around ``model``.

    ``num_classes`` (the training split's class count) goes only to plug-ins that declare
    ``uses_num_classes = True``: the ``pretrain`` baseline sizes its all-class head with it.
    """
    cls = ALGORITHMS[cfg.algorithm]
    if getattr(cls, "uses_num_classes", False):
        return cls(model, cfg, num_classes=num_classes)
    return cls(model, cfg)


from metacompare.algorithms import maml, reptile  # noqa: E402,F401  (registration: maml and fomaml)
from metacompare.algorithms import anil, metasgd  # noqa: E402,F401  (registration)
from metacompare.algorithms import pretrain, scratch  # noqa: E402,F401  (baselines)
from metacompare.algorithms import seed_reptile  # noqa: E402,F401  (the seed document's loop)

__all__ = ["ALGORITHMS", "BACKENDS", "register", "build_algorithm"]
