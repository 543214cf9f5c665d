"""Old import paths of modules that moved into the package's wings, kept working for one release.

``import metacompare.runner`` (say) still gives the module, now ``metacompare.training.runner``, with
a ``DeprecationWarning`` naming the new path. A finder on ``sys.meta_path`` maps the old name to the
module itself, so both names are one module object (patching either patches both).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "metacompare.runconfig": "metacompare.config.runconfig",
    "metacompare.validation": "metacompare.config.validation",
    "metacompare.provenance": "metacompare.storage.provenance",
    "metacompare.results": "metacompare.storage.results",
    "metacompare.tracking": "metacompare.storage.tracking",
    "metacompare.download": "metacompare.data.download",
    "metacompare.data.defaults": "metacompare.workflows.data_defaults",
    "metacompare.data.inspect": "metacompare.workflows.inspect_data",
    "metacompare.resnet12": "metacompare.models.resnet12",
    "metacompare.grouped": "metacompare.models.grouped",
    "metacompare.precision": "metacompare.models.precision",
    "metacompare.inner": "metacompare.algorithms.inner",
    "metacompare.backends": "metacompare.algorithms.backends",
    "metacompare.backends.l2l": "metacompare.algorithms.backends.l2l",
    "metacompare.backends.higher_loop": "metacompare.algorithms.backends.higher_loop",
    "metacompare.backends.functional": "metacompare.algorithms.backends.functional",
    "metacompare.batch_eval": "metacompare.engines.batch_eval",
    "metacompare.compiled": "metacompare.engines.torch_compile",
    "metacompare.distributed": "metacompare.engines.distributed",
    "metacompare.build": "metacompare.training.build",
    "metacompare.runner": "metacompare.training.runner",
    "metacompare.budget": "metacompare.training.budget",
    "metacompare.scoring": "metacompare.training.scoring",
    "metacompare.ladder": "metacompare.training.ladder",
    "metacompare.timing": "metacompare.training.timing",
    "metacompare.tune": "metacompare.workflows.tune",
    "metacompare.sweep": "metacompare.workflows.sweep",
    "metacompare.bench": "metacompare.workflows.bench",
    "metacompare.bench_worker": "metacompare.workflows.bench_worker",
    "metacompare.executors": "metacompare.workflows.executors",
    "metacompare.pool": "metacompare.engines.pool",
    "metacompare.headline": "metacompare.workflows.headline",
    "metacompare.catalogue": "metacompare.workflows.catalogue",
}
# Not aliased: ``metacompare.config`` is now the config package (its names still resolve, see
# metacompare/config/__init__.py), ``metacompare.compare`` is the API function, and the documentation
# tooling left the package (doctools/).


class OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds a moved module under its old name and hands back the module at its new one."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; the old name stops working in the next release",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module) -> None:
        """Nothing to run: ``create_module`` returned the already imported module."""


def install() -> None:
    if not any(isinstance(finder, OldPaths) for finder in sys.meta_path):
        sys.meta_path.insert(0, OldPaths())
