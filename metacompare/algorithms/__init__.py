"""The algorithms: importing this package registers every one of them in :data:`ALGORITHMS`.

Adding an algorithm: one module here with a class decorated by
:func:`~metacompare.algorithms.registry.register`, one import line below, and a test (the contract
test, ``tests/test_contract.py``, runs over every registered name by itself).
"""

from __future__ import annotations

from metacompare.algorithms import maml, reptile  # noqa: F401  (registration: maml, fomaml, maml++; the order is the registry's)
from metacompare.algorithms import anil, metasgd  # noqa: F401  (registration)
from metacompare.algorithms import pretrain, scratch  # noqa: F401  (baselines)
from metacompare.algorithms import seed_reptile  # noqa: F401  (the seed document's loop)
from metacompare.algorithms.registry import ALGORITHMS, build_algorithm, register
from metacompare.backends import BACKENDS

__all__ = ["ALGORITHMS", "BACKENDS", "register", "build_algorithm"]
