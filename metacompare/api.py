"""The Python API: what a notebook or a script imports to do what the command line does.

Each function is a thin wrapper over the library function the command line calls, so both give the
same files and numbers:

    from metacompare.api import compare, inspect, load_comparison, load_results, run

Settings are given as a mapping of dotted config fields (``{"iterations": 50, "user_data.image_size": 14}``),
the ``--set KEY=VALUE`` of the command line. Bad input raises `UserError` (or its kinds `ConfigError`
and `DataError`) with a message naming the field or file and the fix. Results are returned as paths,
summary dicts and pandas DataFrames; nothing is printed unless ``progress`` is asked for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from metacompare.workflows import compare as comparing
from metacompare import files
from metacompare.storage import provenance
from metacompare.algorithms import ALGORITHMS
from metacompare.algorithms.base import MetaAlgorithm, Objective, TaskGradient
from metacompare.algorithms.registry import register
from metacompare.config.loading import RunConfig, expand, load_experiment, parse_override, with_overrides
from metacompare.data import Task
from metacompare.workflows import inspect_data as inspecting
from metacompare.errors import ConfigError, DataError, UserError
from metacompare.report import write_report
from metacompare.report.experiment import Experiment, analyse
from metacompare.training.runner import train_and_evaluate
from metacompare.workflows.own_data import config_file

__all__ = ["Comparison", "ConfigError", "DataError", "Experiment", "MetaAlgorithm", "Objective", "RunConfig", "Task",
           "TaskGradient",
           "UserError", "algorithm_names", "compare", "inspect", "load_comparison", "load_config", "load_results",
           "register", "run", "write_report"]

Settings = Mapping[str, Any] | Sequence[str] | None


def _overrides(settings: Settings) -> list[str]:
    """``{"a.b": 1}`` or ``["a.b=1"]`` -> ``["a.b=1"]``: the ``--set`` strings the config loader reads
    (a value is written as JSON, which the loader reads back as the same YAML value)."""
    if settings is None:
        return []
    if isinstance(settings, str):
        raise UserError(f"settings={settings!r}: give a mapping such as {{'iterations': 50}} or a list of "
                        f"'key=value' strings, not one string")
    if isinstance(settings, Mapping):
        return [f"{key}={json.dumps(value)}" for key, value in settings.items()]
    return [str(item) for item in settings]


def load_config(config: str | Path | Mapping[str, Any], settings: Settings = None) -> list[RunConfig]:
    """A config file, or the mapping such a file holds (``{"dataset": "sine", "algorithm": ["maml"]}``),
    as checked run configs: one per algorithm when ``algorithm`` is a list."""
    if isinstance(config, Mapping):
        return expand(dict(config), _overrides(settings), source="config")
    if not isinstance(config, (str, Path)):
        raise ConfigError(f"config: expected a file path or a mapping of fields, got {type(config).__name__}")
    return load_experiment(config, _overrides(settings))


def algorithm_names() -> list[str]:
    """The names ``algorithm:`` accepts: every registered `MetaAlgorithm` (see `register`)."""
    return sorted(ALGORITHMS)


def inspect(data: str | Path, *, ways: int = 5, shots: int = 1, query: int = 1, form: str | None = None,
            label_column: str = "label", text_column: str = "text", verify: bool = False,
            settings: Settings = None) -> str:
    """What an image folder or a table holds, the split it would get and the largest task it serves,
    as ``metacompare inspect`` prints it; raises DataError where it cannot serve ``ways``-way ``shots``-shot tasks."""
    return inspecting.inspect(data, form, label_column, text_column, ways, shots, query, verify=verify,
                              overrides=_overrides(settings))


def run(config: str | Path | Mapping[str, Any] | RunConfig | Sequence[RunConfig], settings: Settings = None, *,
        results_dir: str | Path | None = None, report: bool = True, progress: bool = False, force: bool = False,
        allow_dirty: bool = False) -> list[dict[str, Any]]:
    """Train and test each run of ``config`` (a file, its mapping, or configs from `load_config`), resuming or
    reading finished runs as ``metacompare run`` does; write each experiment's report unless ``report``
    is False. Returns each run's summary (``summary.json``: scores, untrained floor, cost)."""
    if isinstance(config, (str, Path, Mapping)):
        configs = load_config(config, settings)
    else:
        configs = [config] if isinstance(config, RunConfig) else list(config)
        if not configs or not all(isinstance(c, RunConfig) for c in configs):
            raise ConfigError("config: expected a file path, a mapping of fields, a RunConfig or a list of them "
                              "(from load_config)")
        changes = dict(parse_override(text) for text in _overrides(settings))
        configs = [with_overrides(c, **changes) for c in configs]  # validated: a RunConfig built in code too
    if results_dir is not None:
        configs = [with_overrides(c, results_dir=str(results_dir)) for c in configs]
    folders = sorted({Path(c.results_dir) / c.experiment for c in configs})
    with provenance.dirty_allowed(allow_dirty):  # refused before training when not allowed
        summaries = [train_and_evaluate(c, progress=progress, force=force) for c in configs]
    if report:
        for folder in folders:
            write_report(folder)
    return summaries


def compare(config: str | Path | None = None, *, budget: str, data: str | Path | None = None,
            ways: int | None = None, shots: int | None = None, tune: bool = True, chosen: str | Path | None = None,
            seeds: int | None = None, settings: Settings = None, results_dir: str | Path | None = None,
            progress: bool = False, procs: int = 1, workers: int = 1, rungs: int | None = None,
            target: float | None = None, allow_dirty: bool = False) -> Comparison:
    """Which algorithm is best under one ``budget`` (``"300"`` seconds, ``"cpu:300"``, ``"work:2e6"``), on a
    config or tune file or, with ``data``, on your own folder or table with the default config for it,
    as ``metacompare compare`` does (a rerun resumes and skips finished runs). Returns its tables.
    ``procs``, ``workers``, ``rungs`` and ``target`` are the command's ``--procs`` (processes per run),
    ``--workers`` (runs at once), ``--rungs`` (the budget ladder) and ``--target`` (time to target);
    ``allow_dirty`` records into the repository's results/ from uncommitted code, marked (``--allow-dirty``)."""
    if (config is None) == (data is None):
        raise UserError("compare: give a config file or data=PATH (one of them)")
    overrides = _overrides(settings)
    if data is None:
        overrides = [*(f"{k}={v}" for k, v in (("ways", ways), ("shots", shots)) if v), *overrides]
    else:
        config, _ = config_file(data, ways=ways or 5, shots=shots or 1, procs=procs, results_dir=results_dir,
                                compare_budget=budget)
    with provenance.dirty_allowed(allow_dirty):
        report = comparing.compare(config, budget, tuned=tune, seeds=seeds, overrides=overrides,
                                   results_dir=None if results_dir is None else str(results_dir), progress=progress,
                                   chosen_file=chosen, procs=procs, workers=workers, rungs=rungs, target=target)
    return load_comparison(report.parent)


@dataclass(frozen=True)
class Comparison:
    """A finished compare's tables, as written in ``<experiment>/compare/`` (the CSV files, unrounded).

    Attributes:
        folder: the ``compare/`` folder; ``report`` is its ``report.md``.
        answer: the report's first paragraph.
        algorithms: ``algorithms.csv``: per algorithm, the score and its interval, the untrained floor, the cost.
        pairs: ``pairwise_episodes.csv``: every pair compared on the shared test episodes (None if absent).
        seed_pairs: ``pairwise_seeds.csv``: every pair compared on per-seed means (None if absent).
    """

    folder: Path
    answer: str
    algorithms: pd.DataFrame
    pairs: pd.DataFrame | None
    seed_pairs: pd.DataFrame | None

    @property
    def report(self) -> Path:
        return self.folder / "report.md"


def load_comparison(folder: str | Path) -> Comparison:
    """The tables of a compare's folder: ``<results>/<experiment>_compare_<budget>`` or its ``compare/``."""
    folder = Path(folder)
    folder = folder if folder.name == "compare" else folder / "compare"
    table, report = folder / "algorithms.csv", folder / "report.md"
    if not table.is_file() or not report.is_file():
        raise UserError(f"{folder}: no algorithms.csv and report.md here; give the folder a `metacompare compare` "
                        f"wrote, e.g. results/sine_compare_cpu300s")
    def read(name: str) -> pd.DataFrame | None:
        path = folder / name
        return files.read_frame(path, "rerun the compare to write it again", numeric=()) if path.is_file() else None

    answer = next((p for p in report.read_text(encoding="utf-8").split("\n\n") if p.startswith("**Answer")), "")
    return Comparison(folder, answer, read(table.name), read("pairwise_episodes.csv"), read("pairwise_seeds.csv"))


def load_results(folder: str | Path) -> Experiment:
    """An experiment folder as DataFrames, as its report reads it: ``runs`` (one row per run with its
    config), ``groups`` (per algorithm and setting: score, interval, cost), ``curves`` (validation
    scores), ``episodes`` (per-episode test scores) and ``steps`` (score by adaptation steps)."""
    return analyse(Path(folder))
