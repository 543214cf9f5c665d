"""The ``tune:`` section of a tune file (see :mod:`metacompare.workflows.tune`): the effort every algorithm
gets and the space it searches, read and checked before any trial runs, so that every value of the
space makes a valid run tested on the same episodes."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from metacompare.storage import provenance
from metacompare.algorithms import canonical
from metacompare.config.loading import ConfigError, RunConfig, _apply, _suggest, expand, with_overrides

KINDS = ("log", "float", "int", "choice")
BUDGET_KINDS = ("seconds", "cpu_seconds", "work")  # the bounds a BudgetConfig holds
UNCAPPED = 10**9  # iterations of a run that its budget bounds
DEFAULT_SPACE = {"inner_lr": {"log": [0.001, 0.5]}, "outer_lr": {"log": [0.0001, 0.01]},
                 "inner_steps": {"int": [1, 5]}, "meta_batch_size": {"choice": [4, 8, 16, 32]}}
DEFAULT_PER_ALGORITHM = {"reptile": {"outer_lr": {"log": [0.03, 1.0]}, "inner_lr": {"log": [0.0003, 0.03]}}}


@dataclass
class TuneSpec:
    """The ``tune:`` section: the effort every algorithm gets and where it searches."""

    trials: int = 10
    seed: int = 0
    seeds: int = 3
    trial_budget: dict[str, float] | None = None
    evaluations: int = 4
    space: dict[str, dict] = field(default_factory=lambda: dict(DEFAULT_SPACE))
    per_algorithm: dict[str, dict] = field(default_factory=lambda: dict(DEFAULT_PER_ALGORITHM))

    def space_for(self, algorithm: str) -> dict[str, dict]:
        return {**self.space, **(self.per_algorithm.get(algorithm) or {})}


# ------------------------------------------------------------------------------------- loading
def load(path: str | Path, overrides: Sequence[str] = ()) -> tuple[list[RunConfig], TuneSpec]:
    """A tune file (or a plain config, tuned over the default space) as run configs and a spec."""
    from metacompare import files
    from metacompare.workflows.sweep import _load_base

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; see experiments/compare_sine.yaml for an example")
    raw = files.read_yaml(path, "fix the tune file (see experiments/compare_sine.yaml)")
    section = raw.pop("tune", None)
    if "base" in raw:
        edits, experiment = raw.pop("set", None) or {}, raw.pop("experiment", None)
        base = _load_base(raw.pop("base"), path.parent, str(path))
        if raw:
            raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(raw))}; beside base a tune file has "
                              f"experiment, set and tune")
        for key, value in edits.items():
            _apply(base, key, value)
        if experiment:
            base["experiment"] = experiment
        raw = base
    configs = expand(raw, overrides, source=str(path))  # per-algorithm settings keep the episodes (expand)
    return configs, parse_spec(section, configs, str(path))


def parse_spec(section: Any, configs: list[RunConfig], source: str) -> TuneSpec:
    """Check the ``tune:`` section: known keys, positive counts, a sampleable space of real fields."""
    section = section or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: tune must be a mapping, e.g. tune: {{trials: 10}}")
    names = [f.name for f in dataclasses.fields(TuneSpec)]
    for key in section:
        if key not in names:
            raise ConfigError(f"{source}: unknown field 'tune.{key}'{_suggest(key, names)}; known: {', '.join(names)}")
    spec = TuneSpec(**section)
    spec.per_algorithm = {canonical(str(k)): v for k, v in (spec.per_algorithm or {}).items()}  # former names too
    for name in ("trials", "seeds", "evaluations"):
        value = getattr(spec, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{source}: tune.{name} must be a positive whole number, got {value!r}")
    if spec.trial_budget is not None:
        if not isinstance(spec.trial_budget, dict) or len(spec.trial_budget) != 1 or \
                next(iter(spec.trial_budget)) not in ("iterations", *BUDGET_KINDS):
            raise ConfigError(f"{source}: tune.trial_budget must be one of {{iterations: N}}, {{work: N}}, "
                              f"{{seconds: N}}, {{cpu_seconds: N}}, got {spec.trial_budget!r}")
        spec.trial_budget = {k: float(v) for k, v in spec.trial_budget.items()}
    for cfg in configs:
        for name, dimension in spec.space_for(cfg.algorithm).items():
            _check_dimension(cfg, name, dimension, source)
    return spec


def _check_dimension(cfg: RunConfig, name: str, dimension: Any, source: str) -> None:
    where = f"{source}: tune.space.{name}"
    if not isinstance(dimension, dict) or len(dimension) != 1 or next(iter(dimension)) not in KINDS:
        raise ConfigError(f"{where}: write one of {{log: [low, high]}}, {{float: [low, high]}}, "
                          f"{{int: [low, high]}}, {{choice: [a, b, ...]}}; got {dimension!r}")
    kind, values = next(iter(dimension.items()))
    if not isinstance(values, list) or not values or (kind != "choice" and len(values) != 2):
        raise ConfigError(f"{where}: {kind} needs {'a non-empty list' if kind == 'choice' else '[low, high]'}")
    if kind != "choice":
        try:
            low, high = float(values[0]), float(values[1])
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: bounds must be numbers, got {values!r}") from None
        if not low < high or (kind == "log" and low <= 0):
            raise ConfigError(f"{where}: need low < high{' and low > 0' if kind == 'log' else ''}, got {values!r}")
    for value in values:  # every value must make a valid run (ConfigError names the field) on the same episodes
        with warnings.catch_warnings():  # a trial's warning is for when it runs, not for a bound checked here
            warnings.simplefilter("ignore")
            tried = with_overrides(cfg, **{name: int(value) if kind == "int" else float(value)
                                           if kind in ("log", "float") else value})
        provenance.check_same_episodes([cfg, tried], f"{where}: ")
