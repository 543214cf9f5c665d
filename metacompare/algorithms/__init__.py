"""The algorithms: importing this package registers every one of them in :data:`ALGORITHMS`.

Adding an algorithm: one module here with a class decorated by
:func:`~metacompare.algorithms.registry.register`, one import line below, and a test (the contract
test, ``tests/test_contract.py``, runs over every registered name by itself).
"""

from __future__ import annotations

from metacompare.algorithms import maml, reptile  # noqa: F401  (registration: maml, fomaml, maml++; the order is the registry's)
from metacompare.algorithms import anil, metasgd  # noqa: F401  (registration)
from metacompare.algorithms import pretrain, scratch  # noqa: F401  (baselines)
from metacompare.algorithms import naive_reptile  # noqa: F401  (the Reptile tutorial article's loop)
from metacompare.algorithms.registry import ALGORITHMS, ALIASES, build_algorithm, canonical, register
from metacompare.algorithms.backends import BACKENDS

__all__ = ["ALGORITHMS", "ALIASES", "BACKENDS", "register", "build_algorithm", "canonical"]
