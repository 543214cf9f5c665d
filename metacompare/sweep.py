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

import contextlib
import copy
import functools
import itertools
import math
import os
import socket
import sys
import traceback
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from tqdm import tqdm

from metacompare import files, pool, results
from metacompare.config import ConfigError, RunConfig, _apply, expand, parse_override, with_overrides
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
            raise ConfigError(f"{where}.{key}: expected a non-empty list of values, e.g. {key}: [{values!r}]")
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
RAY_CONNECT_TIMEOUT_S = 10.0  # an unreachable --address fails after this long


def run_one(cfg: RunConfig, cwd: str | None = None) -> dict[str, Any]:
    """Train one run in this process and return its summary; an exception becomes a 'failed' summary.

    Runs in a worker (a local process or a Ray task). ``cwd`` is the sweep's working directory, so
    relative ``results_dir`` and ``data_root`` mean the same on every worker. A stop (KeyboardInterrupt,
    after the runner's checkpoint) is not a failure: it propagates, and the worker takes no further run.
    """
    from metacompare.runner import run_dir, train_and_evaluate

    if cwd and Path(cwd).is_dir():
        os.chdir(cwd)
    try:
        return train_and_evaluate(cfg, progress=False)
    except Exception as err:  # recorded and reported; the sweep goes on with the other runs
        done = 0
        with contextlib.suppress(Exception):
            done = int(files.load_torch(run_dir(cfg) / "checkpoint.pt", "")["iteration"])
        return failed_summary(cfg, f"{type(err).__name__}: {err}", done, traceback.format_exc())


def failed_summary(cfg: RunConfig, error: str, iterations_done: int = 0, trace: str = "") -> dict[str, Any]:
    """A summary row for a run that raised: its config fields, status 'failed' and the error.

    ``iterations_done`` is the run's last checkpointed iteration: where a rerun of the sweep resumes.
    """
    return results.summary_row(cfg, status="failed", iterations_done=iterations_done,
                               error=error.replace("\n", " ")[:500], traceback=trace)


def _check_ray_address(address: str | None, timeout: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """Fail within ``timeout`` seconds, in one line, when nothing listens at a ``host:port`` address
    (``ray.init`` would otherwise retry for minutes)."""
    if not address or address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address: expected host:port (or ray://host:port, auto, local), got '{address}'")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise UserError(f"--address {address}: no Ray cluster answered within {timeout:.0f} s "
                        f"({getattr(err, 'strerror', None) or err}); start one with `ray start --head` "
                        f"or leave out --address for a local instance") from None


def _ray_results(configs: list[RunConfig], address: str | None) -> Iterator[tuple[RunConfig, dict]]:
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray, an optional extra: pip install 'metacompare[ray]' "
                        "(or pip install ray)") from None
    started = not ray.is_initialized()
    if started:
        _check_ray_address(address)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise UserError(f"--address {address}: Ray could not connect ({str(err).splitlines()[0][:200]}); "
                            f"check the address or leave it out for a local instance") from None
    try:
        task = ray.remote(num_cpus=1)(run_one)
        pending = {task.remote(cfg, os.getcwd()): cfg for cfg in configs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            cfg = pending.pop(done[0])
            try:
                yield cfg, ray.get(done[0])
            except ray.exceptions.RayError as err:  # the task's worker or node died
                yield cfg, failed_summary(cfg, f"ray task failed ({type(err).__name__}: {err})")
    finally:
        for ref in pending if started else ():
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


def sweep_lock(experiment_dir: Path):
    """Exclusive, non-blocking: a second sweep on the same results folder is refused, not interleaved."""
    return results.experiment_lock(experiment_dir, "sweep")


def run_sweep(configs: list[RunConfig], workers: int | None = None, executor: str = "local",
              address: str | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Run every config (skipping finished ones), record each outcome in runs.csv, return the summaries.

    ``workers`` local processes (default: one per core), each training one run at a time with one
    torch thread (``runner.pin_threads``), so a run's numbers do not depend on ``workers``. With
    ``executor='ray'`` each run is a one-CPU Ray task on the cluster at ``address`` (a new local
    instance when None); results_dir and data_root must then be reachable at the same path from
    every node. SIGTERM or Ctrl-C, or this process's death, stop every worker within an iteration
    (each checkpoints first); no queued run starts after a stop.
    """
    if not configs:
        raise UserError("the sweep holds no runs; give grid values or points")
    from metacompare.runner import stop_signals_raise

    experiment_dir = Path(configs[0].results_dir) / configs[0].experiment
    if any(Path(c.results_dir) / c.experiment != experiment_dir for c in configs):
        raise UserError("a sweep writes one experiment folder; do not vary results_dir or experiment")
    if executor not in ("local", "ray"):
        raise UserError(f"--executor: unknown '{executor}'; choose local or ray")
    workers = workers or _cores()
    if not 1 <= workers <= MAX_WORKERS:
        raise UserError(f"--workers: must be 1 to {MAX_WORKERS}, got {workers}")
    with sweep_lock(experiment_dir), stop_signals_raise():
        summaries, todo = _finished_runs(configs, experiment_dir)
        bar = tqdm(total=len(configs), initial=len(summaries), desc=experiment_dir.name, unit="run",
                   disable=not progress, dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30.0)
        say = bar.write if progress else functools.partial(print, flush=True)
        if summaries:
            say(f"{len(summaries)} of {len(configs)} runs already finished; running the other {len(todo)}")
        if not todo:
            stream: Iterable[tuple[RunConfig, dict]] = ()
        elif executor == "local":
            stream = pool.local_results(todo, min(workers, len(todo)), run_one, failed_summary)
        else:
            stream = _ray_results(todo, address)
        try:
            for cfg, summary in stream:
                if summary["status"] == "failed":
                    _record_failure(cfg, summary, experiment_dir)
                summaries[cfg.run_id()] = summary
                bar.update(1)
                say(outcome_line(summary))
        finally:
            bar.close()
    return [summaries[c.run_id()] for c in configs]


MAX_WORKERS = 256  # each worker holds a torch interpreter (~0.3-1 GB)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _finished_runs(configs: list[RunConfig], experiment_dir: Path) -> tuple[dict[str, dict], list[RunConfig]]:
    """Summaries of the runs already finished (their runs.csv rows restored if missing), and the rest.

    An unreadable runs.csv stops the sweep here, before any training; an unreadable summary.json is
    left to its run, which reports it as that run's failure while the others go on.
    """
    from metacompare.runner import finished_run, run_dir

    recorded = {row["run_id"] for row in results.read_runs(experiment_dir)}
    finished, todo = {}, []
    for cfg in configs:
        try:
            finished[cfg.run_id()] = finished_run(run_dir(cfg), recorded, cfg)
        except files.FileProblem:
            todo.append(cfg)
    return finished, todo


def _record_failure(cfg: RunConfig, summary: dict[str, Any], experiment_dir: Path) -> None:
    from metacompare.runner import run_dir

    results.record_run(experiment_dir, summary)
    results.atomic_write(run_dir(cfg) / "error.txt", summary.get("traceback") or summary["error"])


def outcome_line(s: dict[str, Any]) -> str:
    """One line per finished run: id, status and score (or the error)."""
    head = f"{s['run_id']} {s['status']}"
    if s["status"] == "failed":
        return f"{head}: {s.get('error', '')}"
    if s["status"] == "diverged":
        return f"{head} at iteration {s.get('diverged_at')}"
    if s.get("dataset") == "sine":
        return f"{head}: test MSE {_fmt(s['test_loss_mean'])} ± {_fmt(s['test_loss_ci95'])}"
    return f"{head}: test accuracy {_fmt(100 * s['test_accuracy_mean'], 2)}% ± {_fmt(100 * s['test_accuracy_ci95'], 2)}%"


def _fmt(value: float, digits: int = 4) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def status_counts(summaries: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in summaries:
        counts[s["status"]] = counts.get(s["status"], 0) + 1
    return counts
