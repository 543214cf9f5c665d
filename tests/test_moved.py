"""Modules that moved into the package's folders still import under their old names, for one release."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from metacompare._moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_import_path_gives_the_moved_module_with_a_warning(old):
    new = importlib.import_module(MOVED[old])
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {MOVED[old]}"):
        module = importlib.import_module(old)
    assert module is new  # one module object: patching either name patches both


def test_old_from_imports_work_in_a_fresh_interpreter():
    code = ("import warnings; warnings.simplefilter('error')\n"
            "from metacompare.config import RunConfig, load_experiment\n"  # the config package: no warning
            "warnings.simplefilter('ignore')\n"
            "from metacompare import runner, results\n"
            "from metacompare.training.runner import train_and_evaluate\n"
            "assert runner.train_and_evaluate is train_and_evaluate and results.__name__ == 'metacompare.storage.results'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_old_path_names_a_module_that_exists():
    assert all(importlib.util.find_spec(new) is not None for new in MOVED.values())
