"""Sweeps: one base config times a grid of field values, run in parallel and resumably.

A sweep file::

    experiment: sine_task_counts        # results go to <results_dir>/<experiment>/
    base: ../configs/sine.yaml          # a config file (relative to this file) or an inline mapping
    set: {iterations: 500}              # optional: edits to the base, for every run (dotted keys allowed)
    per_algorithm:                      # optional: edits for one algorithm, merged into the base's
      reptile: {inner_steps: 3}
    grid:                               # the cartesian product of these values (dotted keys allowed);
      num_tasks: [10, 100, -1]          # a list of such mappings is the union of their products
      seed: [0, 1]
    points:                             # optional explicit combinations, added to the grid
      - {algorithm: scratch, eval_inner_steps: 50}

Every combination goes through the same expansion as ``run`` (an ``algorithm`` list in the base gives
one run per algorithm; ``per_algorithm`` wins over the base and ``set``); grid and point values then
win over those, and ``--set`` overrides win over everything. Runs are keyed by ``RunConfig.run_id``, so a rerun skips
finished runs and resumes interrupted ones from their checkpoints (the runner does both).
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any, Iterable, Sequence

from metacompare.workflows import executors

from metacompare import files
from metacompare.config.loading import ConfigError, RunConfig, _apply, expand, parse_override, with_overrides
from metacompare.errors import UserError

SWEEP_KEYS = ("experiment", "base", "set", "per_algorithm", "grid", "points")


# ------------------------------------------------------------------------------------- expansion
def grid_points(grid: dict[str, list] | list[dict[str, list]] | None, where: str = "grid") -> list[dict[str, Any]]:
    """The cartesian product of a ``{field: [values]}`` mapping (or the union over a list of them)."""
    if grid is None:
        return []
    if isinstance(grid, list):
        return [p for i, g in enumerate(grid) for p in grid_points(g, f"{where}[{i}]")]
    if not isinstance(grid, dict):
        raise ConfigError(f"{where}: expected a mapping of field -> list of values, e.g. inner_lr: [0.1, 0.01]")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            example = f"[{values!r}]" if values not in ([], None, {}) else "[a, b]"  # the one value, as a list
            raise ConfigError(f"{where}.{key}: expected a non-empty list of values, e.g. {key}: {example}")
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def expand_sweep(spec: dict[str, Any], base_dir: Path = Path("."), overrides: Sequence[str] = (),
                 source: str = "sweep") -> list[RunConfig]:
    """Every run of a sweep specification, validated, without duplicates, in grid order."""
    unknown = set(spec) - set(SWEEP_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}; a sweep file has "
                          f"{', '.join(SWEEP_KEYS)}")
    base = _load_base(spec.get("base"), base_dir, source)
    edits = spec.get("set") or {}
    if not isinstance(edits, dict):
        raise ConfigError(f"{source}: set must map fields to values, e.g. set: {{iterations: 500}}")
    for key, value in edits.items():
        _apply(base, key, value)
    per_algorithm = spec.get("per_algorithm") or {}
    if not isinstance(per_algorithm, dict) or not all(isinstance(v, dict) for v in per_algorithm.values()):
        raise ConfigError(f"{source}: per_algorithm must map algorithm names to fields, e.g. reptile: {{inner_steps: 5}}")
    if per_algorithm:
        merged = {name: dict(fields or {}) for name, fields in (base.get("per_algorithm") or {}).items()}
        for name, fields in per_algorithm.items():
            merged.setdefault(name, {}).update(fields)
        base["per_algorithm"] = merged
    experiment = spec.get("experiment", base.get("experiment", "sweep"))
    points = grid_points(spec.get("grid"), f"{source}: grid")
    extra = spec.get("points") or []
    if not isinstance(extra, list) or not all(isinstance(p, dict) for p in extra):
        raise ConfigError(f"{source}: points must be a list of mappings, e.g. - {{algorithm: maml, seed: 3}}")
    points += extra
    if not points:
        points = [{}]
    settings = [parse_override(o) for o in overrides]
    configs: dict[str, RunConfig] = {}
    for point in points:
        for key in point:
            if key in ("experiment", "results_dir"):
                raise ConfigError(f"{source}: '{key}' cannot vary within a sweep; set it once at the top "
                                  f"(experiment:) or with --results-dir")
        raw = dict(base)
        fields = {**point, "experiment": experiment, **dict(settings)}
        if "algorithm" in fields:  # set before expansion, so that per_algorithm follows the algorithm
            raw["algorithm"] = fields.pop("algorithm")
        try:
            for cfg in expand(raw, source=source):
                cfg = with_overrides(cfg, **fields)
                _refuse_same_run(configs.setdefault(cfg.run_id(), cfg), cfg, source)
        except ConfigError as err:
            raise ConfigError(f"{source}: point {point}: {err}") from None
    return list(configs.values())


def _refuse_same_run(kept: RunConfig, new: RunConfig, source: str) -> None:
    """Two points that differ only in fields outside a run's identity would be one run (one run id,
    one folder): refuse, rather than silently run one of them."""
    differ = sorted(k for k, v in new.to_dict().items() if kept.to_dict()[k] != v)
    if differ:
        raise ConfigError(f"{', '.join(differ)} cannot vary within a sweep: not part of a run's identity "
                          f"(run_id), so these points would be the same run; set it once (set: or --set)")


SWEEP_FIX = "fix the file (see experiments/ for examples)"


def _load_base(base: Any, base_dir: Path, source: str) -> dict[str, Any]:
    if isinstance(base, dict):
        return copy.deepcopy(base)
    if not isinstance(base, str):
        raise ConfigError(f"{source}: base must be a config file path (relative to the sweep file) or a "
                          f"mapping of fields, e.g. base: ../configs/sine.yaml")
    path = base_dir / base
    if not path.exists():
        raise ConfigError(f"{source}: base config {path} not found; paths are relative to the sweep file")
    return files.read_yaml(path, f"fix the base config or point {source}'s base: at another")


def load_sweep(path: str | Path, overrides: Sequence[str] = (), results_dir: str | None = None) -> list[RunConfig]:
    """Read a sweep file (see the module docstring) into its list of runs."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such sweep file; see experiments/ for examples")
    spec = files.read_yaml(path, SWEEP_FIX)
    spec.setdefault("experiment", path.stem)
    configs = expand_sweep(spec, path.parent, overrides, source=str(path))
    if results_dir:  # not a --set value: a path is not YAML
        configs = [with_overrides(c, results_dir=str(results_dir)) for c in configs]
    return configs


# ------------------------------------------------------------------------------------- execution
def run_sweep(configs: list[RunConfig], workers: int | None = None, executor: str = "local",
              address: str | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Run every config (skipping finished ones), record each outcome in runs.csv, return the summaries.

    ``workers`` local processes (default: one per core), each training one run at a time with one
    torch thread (``runner.pin_threads``), so a run's numbers do not depend on ``workers``. With
    ``executor='ray'`` each run is a one-CPU Ray task on the cluster at ``address`` (a new local
    instance when None); results_dir and data_root must then be reachable at the same path from
    every node. Stopping and resuming: :func:`metacompare.workflows.executors.run_all`.
    """
    if not configs:
        raise UserError("the sweep holds no runs; give grid values or points")
    return executors.run_all(configs, workers or executors.cores(), executor, address, progress)


def status_counts(summaries: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in summaries:
        counts[s["status"]] = counts.get(s["status"], 0) + 1
    return counts
