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

import concurrent.futures
import contextlib
import copy
import fcntl
import functools
import itertools
import json
import math
import multiprocessing
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import yaml
from tqdm import tqdm

from metacompare import results
from metacompare.config import ConfigError, RunConfig, _apply, expand, parse_override, with_overrides
from metacompare.errors import UserError

SWEEP_KEYS = ("experiment", "base", "set", "per_algorithm", "grid", "points")
NOT_SWEEPABLE = ("experiment", "results_dir")  # one sweep writes one experiment folder


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
            if key in NOT_SWEEPABLE:
                raise ConfigError(f"{source}: '{key}' cannot vary within a sweep; set it once at the top "
                                  f"(experiment:) or with --results-dir")
        raw = dict(base)
        fields = {**point, "experiment": experiment, **dict(settings)}
        if "algorithm" in fields:  # set before expansion, so that per_algorithm follows the algorithm
            raw["algorithm"] = fields.pop("algorithm")
        try:
            for cfg in expand(raw, source=source):
                cfg = with_overrides(cfg, **fields)
                configs.setdefault(cfg.run_id(), cfg)
        except ConfigError as err:
            raise ConfigError(f"{source}: point {point}: {err}") from None
    return list(configs.values())


def _load_base(base: Any, base_dir: Path, source: str) -> dict[str, Any]:
    if isinstance(base, dict):
        return copy.deepcopy(base)
    if not isinstance(base, str):
        raise ConfigError(f"{source}: base must be a config file path (relative to the sweep file) or a "
                          f"mapping of fields, e.g. base: ../configs/sine.yaml")
    path = base_dir / base
    if not path.is_file():
        raise ConfigError(f"{source}: base config {path} not found; paths are relative to the sweep file")
    return _read_yaml(path)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: YAML syntax error{where}; fix the file") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def load_sweep(path: str | Path, overrides: Sequence[str] = (), results_dir: str | None = None) -> list[RunConfig]:
    """Read a sweep file (see the module docstring) into its list of runs."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such sweep file; see experiments/ for examples")
    spec = _read_yaml(path)
    spec.setdefault("experiment", path.stem)
    configs = expand_sweep(spec, path.parent, overrides, source=str(path))
    if results_dir:  # not a --set value: a path is not YAML
        configs = [with_overrides(c, results_dir=str(results_dir)) for c in configs]
    return configs


# ------------------------------------------------------------------------------------- execution
def _threads_per_worker(workers: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // workers)


def run_one(cfg: RunConfig, threads: int, cwd: str | None = None) -> dict[str, Any]:
    """Train one run in this process and return its summary; an exception becomes a 'failed' summary.

    Runs in a worker (a local process or a Ray task). ``cwd`` is the sweep's working directory, so
    relative ``results_dir`` and ``data_root`` mean the same on every worker.
    """
    import torch

    from metacompare.runner import run_dir, train_and_evaluate

    if cwd and Path(cwd).is_dir():
        os.chdir(cwd)
    torch.set_num_threads(threads)
    try:
        return train_and_evaluate(cfg, progress=False)
    except Exception as err:  # recorded and reported; the sweep goes on with the other runs
        checkpoint = run_dir(cfg) / "checkpoint.pt"
        done = 0
        if checkpoint.is_file():
            with contextlib.suppress(Exception):
                done = torch.load(checkpoint, weights_only=False)["iteration"]
        return failed_summary(cfg, f"{type(err).__name__}: {err}", done, traceback.format_exc())


def failed_summary(cfg: RunConfig, error: str, iterations_done: int = 0, trace: str = "") -> dict[str, Any]:
    """A summary row for a run that raised: its config fields, status 'failed' and the error.

    ``iterations_done`` is the run's last checkpointed iteration: where a rerun of the sweep resumes.
    """
    return {**{k: v for k, v in cfg.to_dict().items() if k in results.SUMMARY_COLUMNS},
            "run_id": cfg.run_id(), "status": "failed", "iterations_done": iterations_done,
            "error": error.replace("\n", " ")[:500], "traceback": trace, "config": cfg.to_dict()}


def _ignore_sigint() -> None:
    # Ctrl-C reaches the whole process group; only the parent acts on it, by sending each worker one
    # SIGTERM, which the runner turns into a checkpoint (a second signal could cut that save short).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _local_results(configs: list[RunConfig], workers: int, threads: int) -> Iterator[tuple[RunConfig, dict]]:
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                                initializer=_ignore_sigint) as pool:
        futures = {pool.submit(run_one, cfg, threads, os.getcwd()): cfg for cfg in configs}
        try:
            for future in concurrent.futures.as_completed(futures):
                cfg = futures[future]
                try:
                    yield cfg, future.result()
                except concurrent.futures.process.BrokenProcessPool as err:  # a worker was killed
                    yield cfg, failed_summary(cfg, f"worker process died ({err})")
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            for child in multiprocessing.active_children():
                child.terminate()
            raise


def _ray_results(configs: list[RunConfig], address: str | None, threads: int) -> Iterator[tuple[RunConfig, dict]]:
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray, an optional extra: pip install 'metacompare[ray]' "
                        "(or pip install ray)") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=threads)(run_one)
        pending = {task.remote(cfg, threads, os.getcwd()): cfg for cfg in configs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            cfg = pending.pop(done[0])
            try:
                yield cfg, ray.get(done[0])
            except ray.exceptions.RayError as err:  # the task's worker or node died
                yield cfg, failed_summary(cfg, f"ray task failed ({type(err).__name__}: {err})")
    finally:
        if started:
            ray.shutdown()


@contextlib.contextmanager
def sweep_lock(experiment_dir: Path) -> Iterator[None]:
    """Exclusive, non-blocking: a second sweep on the same results folder is refused, not interleaved."""
    results.check_writable(experiment_dir)
    path = experiment_dir / ".sweep.lock"
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{experiment_dir}: another sweep is running on this results folder (it holds "
                            f"{path}); wait for it to finish or use another --results-dir") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_sweep(configs: list[RunConfig], workers: int | None = None, executor: str = "local",
              address: str | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Run every config (skipping finished ones), record each outcome in runs.csv, return the summaries.

    ``workers`` local processes share the machine's cores: torch threads per worker = cores //
    workers, fixed by ``workers`` alone so that numbers do not depend on how many runs remain. With
    ``executor='ray'`` each run is a one-CPU Ray task on the cluster at ``address`` (a new local
    instance when None); results_dir and data_root must then be reachable at the same path from
    every node.
    """
    if not configs:
        raise UserError("the sweep holds no runs; give grid values or points")
    from metacompare.runner import stop_signals_raise

    experiment_dir = Path(configs[0].results_dir) / configs[0].experiment
    if any(Path(c.results_dir) / c.experiment != experiment_dir for c in configs):
        raise UserError("a sweep writes one experiment folder; do not vary results_dir or experiment")
    if executor not in ("local", "ray"):
        raise UserError(f"--executor: unknown '{executor}'; choose local or ray")
    workers = workers or _threads_per_worker(1)
    if workers < 1:
        raise UserError(f"--workers: must be at least 1, got {workers}")
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
            stream = _local_results(todo, min(workers, len(todo)), _threads_per_worker(workers))
        else:
            stream = _ray_results(todo, address, threads=1)
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


def _finished_runs(configs: list[RunConfig], experiment_dir: Path) -> tuple[dict[str, dict], list[RunConfig]]:
    """Summaries of the runs already finished (their runs.csv rows restored if missing), and the rest."""
    from metacompare.runner import run_dir

    recorded = {row.get("run_id") for row in results.read_csv(experiment_dir / "runs.csv")}
    finished, todo = {}, []
    for cfg in configs:
        path = run_dir(cfg) / "summary.json"
        if not path.is_file():
            todo.append(cfg)
            continue
        finished[cfg.run_id()] = summary = json.loads(path.read_text())
        if cfg.run_id() not in recorded:
            results.record_run(experiment_dir, summary)
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
