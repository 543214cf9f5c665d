"""The algorithm registry: ``ALGORITHMS[name]`` is a :class:`~metacompare.algorithms.base.MetaAlgorithm`
subclass, added by the :func:`register` class decorator when its module is imported.

A module of its own (below the package's ``__init__``, which imports every algorithm module) so that
an algorithm module can register itself without importing the package that imports it.
"""

from __future__ import annotations

ALGORITHMS: dict[str, type] = {}

# Former names still accepted in configs: each runs the algorithm it maps to (results recorded under a
# former name keep it, in their folders and runs.csv).
ALIASES = {"seed_reptile": "naive_reptile", "seed_reptile_fixed": "naive_reptile_fixed"}


def canonical(name: str) -> str:
    """The registered name for ``name``, a current or a former one (:data:`ALIASES`)."""
    return ALIASES.get(name, name)


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
    if cls.uses_num_classes:
        return cls(model, cfg, num_classes=num_classes)
    return cls(model, cfg)
