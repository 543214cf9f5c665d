"""Where runs train: this process, local worker processes or a Ray cluster, for sweep, compare and tune.

A job list goes in and ``(job, outcome)`` pairs come out as each job finishes, whichever executor
runs them (:func:`outcomes`); :func:`run_all` adds what a results folder needs around it: one lock,
finished runs skipped, failures recorded, one progress bar.

Fair placement (``compare`` and ``tune``): every run trains on processes of one torch thread each
(``runner.pin_threads``), so a run's numbers do not depend on the placement; at most one process per
core (``--workers N`` times ``--procs P`` may not exceed the cores, :func:`check_placement`); and runs
are handed out seed by seed with the algorithms in turn (:func:`interleave`), so every algorithm has
as many runs going at once and shares the machine with the same load. ``work:`` budgets are then
untouched by the neighbours; CPU-second budgets buy a little less training beside busy neighbours
(shared caches and memory bandwidth), alike for every algorithm.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import signal
import socket
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from tqdm import tqdm

from metacompare import files

from metacompare.engines import pool

from metacompare.storage import results
from metacompare.storage.provenance import PLACEMENT
from metacompare.errors import UserError
from metacompare.data.source import classifies

MAX_WORKERS = 256  # each worker holds a torch interpreter (~0.3-1 GB)
RAY_CONNECT_TIMEOUT_S = 10.0  # an unreachable --address fails after this long
RAY_STOP_GRACE_S = 60.0  # a stopped comparison waits this long for its Ray tasks to checkpoint
EXECUTORS = ("local", "ray")


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# ------------------------------------------------------------------------------------- one run
def enter(cwd: str | None) -> None:
    """In a worker: the submitting process's working directory, so that relative ``results_dir`` and
    ``data_root`` mean the same on every worker."""
    if cwd and Path(cwd).is_dir():
        os.chdir(cwd)


def run_one(cfg, cwd: str | None = None, train: Callable | None = None) -> dict[str, Any]:
    """Train one run in this process (a local worker or a Ray task) and return its summary; an
    exception becomes a 'failed' summary. ``train(cfg, progress=False)`` trains (default:
    ``runner.train_and_evaluate``). A stop (KeyboardInterrupt, after the runner's checkpoint) is not
    a failure: it propagates, and the worker takes no further run."""
    from metacompare.training.runner import run_dir, train_and_evaluate

    enter(cwd)
    try:
        return (train or train_and_evaluate)(cfg, progress=False)
    except Exception as err:  # recorded and reported; the other runs go on
        done = 0
        with contextlib.suppress(Exception):
            done = int(files.load_torch(run_dir(cfg) / "checkpoint.pt", "")["iteration"])
        return failed_summary(cfg, f"{type(err).__name__}: {err}", done, traceback.format_exc())


def failed_summary(cfg, error: str, iterations_done: int = 0, trace: str = "") -> dict[str, Any]:
    """A summary row for a run that raised: its config fields, status 'failed' and the error.

    ``iterations_done`` is the run's last checkpointed iteration: where a rerun resumes.
    """
    return results.summary_row(cfg, status="failed", iterations_done=iterations_done,
                               error=error.replace("\n", " ")[:500], traceback=trace)


# ------------------------------------------------------------------------------------- placement
def interleave(items: Iterable, key: Callable = lambda cfg: cfg.algorithm) -> list:
    """Round robin over the groups ``key`` makes (algorithms, each in seed order): seed 0 of every
    algorithm, then seed 1 of every algorithm..., so the runs going at once are spread evenly."""
    groups: dict[Any, list] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return [item for turn in itertools.zip_longest(*groups.values()) for item in turn if item is not None]


def check_executor(workers: int, executor: str) -> None:
    if executor not in EXECUTORS:
        raise UserError(f"--executor: unknown '{executor}'; choose {' or '.join(EXECUTORS)}")
    if not 1 <= workers <= MAX_WORKERS:
        raise UserError(f"--workers: must be 1 to {MAX_WORKERS}, got {workers}")


def check_placement(workers: int, procs: int, executor: str) -> None:
    """Refuse local placements that would give some process less than a core of its own (Ray
    reserves ``procs`` CPUs per run itself)."""
    check_executor(workers, executor)
    if executor == "local" and workers > 1 and workers * procs > cores():
        raise UserError(f"--workers {workers} x --procs {procs} = {workers * procs} processes, more than this "
                        f"machine's {cores()} cores, so runs would not get a core each; use --workers "
                        f"{max(1, cores() // procs)} or fewer")


def placement_words(workers: int, procs: int, executor: str, address: str | None = None) -> str:
    """Where this command trains its runs, in words (each run keeps the words it trained under: :func:`placed`)."""
    each = f"each run on {procs} process{'es' if procs > 1 else ''} of one torch thread"
    turns = "runs handed out seed by seed with the algorithms in turn"
    if executor == "ray":
        return f"Ray tasks on {address or 'a local Ray instance'} reserving {procs} CPU(s) per run, {each}; {turns}"
    if workers == 1:
        return f"one run at a time in one process, {each}; no run had a neighbour"
    return (f"{workers} local worker processes on {cores()} cores, {each}; {turns}, so every algorithm "
            f"had as many runs going at once")


@contextlib.contextmanager
def placed(words: str) -> Iterator[None]:
    """Runs trained inside (here or in the workers started inside; Ray tasks get ``words`` passed)
    record ``words`` in their summaries, so that a report on runs another command trained says where
    they trained, not where this command would have (:func:`placement_line`)."""
    previous = os.environ.get(PLACEMENT)
    os.environ[PLACEMENT] = words
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(PLACEMENT, None)
        else:
            os.environ[PLACEMENT] = previous


def placement_line(summaries: list[dict], current: str) -> str:
    """The report's line on where the runs trained: the placements the runs recorded (a resumed run may
    have had two), else, for runs from before they were recorded, this command's."""
    counts: dict[str, int] = {}
    for summary in summaries:
        for words in summary.get("placements") or [current]:
            counts[words] = counts.get(words, 0) + 1
    if len(counts) <= 1:
        return f"Placement: {next(iter(counts), current)}."
    return ("Placement: the runs trained under more than one placement (a comparison resumed with other "
            "options): " + "; ".join(f"{words} ({n} run{'s' if n > 1 else ''})" for words, n in counts.items()) + ".")


# ------------------------------------------------------------------------------------- executors
def outcomes(jobs: list, run: Callable, failed: Callable, workers: int = 1, executor: str = "local",
             address: str | None = None, cpus: int = 1) -> Iterator[tuple[Any, Any]]:
    """``(job, run(job, cwd))`` for every job as each finishes, from ``workers`` local processes
    (:mod:`metacompare.engines.pool`) or as Ray tasks of ``cpus`` CPUs each; a lost worker or task gives
    ``failed(job, message)``. ``run`` must be picklable: a module-level function or a partial of one."""
    if not jobs:
        return
    if executor == "ray":
        yield from _ray_outcomes(jobs, run, failed, address, cpus)
    else:
        yield from pool.local_results(jobs, min(workers, len(jobs)), run, failed)


def check_ray_address(address: str | None, timeout: float = RAY_CONNECT_TIMEOUT_S) -> None:
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


def _call(run: Callable, job: Any, cwd: str, placement: str | None = None) -> Any:
    """A Ray task's body (``ray.remote`` takes functions, not partials). ``ray.cancel`` stops a task
    through its SIGINT handler, which a worker may have inherited as ignored (a driver started in the
    background): the default is put back, so that the run stops as it would on Ctrl-C."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if placement is not None:
        os.environ[PLACEMENT] = placement
    return run(job, cwd)


def _ray_outcomes(jobs: list, run: Callable, failed: Callable, address: str | None,
                  cpus: int) -> Iterator[tuple[Any, Any]]:
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray, an optional extra: pip install 'metacompare[ray]' "
                        "(or pip install ray)") from None
    started = not ray.is_initialized()
    if started:
        check_ray_address(address)
        on_sigterm = signal.getsignal(signal.SIGTERM)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise UserError(f"--address {address}: Ray could not connect ({str(err).splitlines()[0][:200]}); "
                            f"check the address or leave it out for a local instance") from None
        if threading.current_thread() is threading.main_thread() and on_sigterm is not None:
            # ray.init's own SIGTERM handler exits on the spot: put back the one before it, so that
            # SIGTERM stops the comparison as Ctrl-C does (runs checkpointed, one line said)
            signal.signal(signal.SIGTERM, on_sigterm)
    task = ray.remote(num_cpus=cpus)(_call)
    pending = {task.remote(run, job, os.getcwd(), os.environ.get(PLACEMENT)): job for job in jobs}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(done[0])
            try:
                yield job, ray.get(done[0])
            except ray.exceptions.RayError as err:  # the task's worker or node died
                yield job, failed(job, f"ray task failed ({type(err).__name__}: {err})")
    finally:
        try:
            if started and pending:
                _stop_tasks(ray, list(pending))
        finally:
            if started:
                ray.shutdown()


def _stop_tasks(ray, refs: list, grace: float = RAY_STOP_GRACE_S) -> None:
    """Stop running tasks the way Ctrl-C stops a local run: ``ray.cancel`` raises KeyboardInterrupt in
    the task through its SIGINT handler, so a training run ends its iteration and checkpoints it; a task
    still running after ``grace`` seconds (or after a second Ctrl-C here) is ended at once."""
    for ref in refs:
        with contextlib.suppress(Exception):
            ray.cancel(ref)
    try:
        ray.wait(refs, num_returns=len(refs), timeout=grace)
    finally:
        with contextlib.suppress(Exception):  # force only the tasks still running: forcing one that has
            _, running = ray.wait(refs, num_returns=len(refs), timeout=0)  # ended trips a check in Ray's core
            for ref in running:
                ray.cancel(ref, force=True)


# ------------------------------------------------------------------------------------- a results folder
def experiment_lock(experiment_dir: Path, command: str = "sweep"):
    """The results folder's one writer lock (:func:`metacompare.storage.results.experiment_lock`)."""
    return results.experiment_lock(experiment_dir, command)


def run_all(configs: list, workers: int, executor: str = "local", address: str | None = None,
            progress: bool = True, run: Callable = run_one, cpus: int = 1, locked: bool = False) -> list[dict[str, Any]]:
    """Run every config of one experiment folder (skipping finished ones) through :func:`outcomes`,
    record each failure in runs.csv, return the summaries in ``configs``' order. SIGTERM or Ctrl-C,
    or this process's death, stop every worker within an iteration (each checkpoints first); no
    queued run starts after a stop, and a rerun resumes: finished runs keep their one row each.
    ``locked``: the caller (``compare``, ``tune``) already holds the folder's lock."""
    from metacompare.training.checkpoint import stop_signals_raise

    experiment_dir = Path(configs[0].results_dir) / configs[0].experiment
    if any(Path(c.results_dir) / c.experiment != experiment_dir for c in configs):
        raise UserError("one experiment folder at a time: do not vary results_dir or experiment")
    check_executor(workers, executor)
    with contextlib.nullcontext() if locked else experiment_lock(experiment_dir), stop_signals_raise():
        summaries, todo = finished_runs(configs, experiment_dir)
        bar = tqdm(total=len(configs), initial=len(summaries), desc=experiment_dir.name, unit="run",
                   disable=not progress, dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30.0)
        say = bar.write if progress else functools.partial(print, flush=True)
        if summaries:
            say(f"{len(summaries)} of {len(configs)} runs already finished; running the other {len(todo)}")
        try:
            for cfg, summary in outcomes(todo, run, failed_summary, workers, executor, address, cpus):
                if summary["status"] == "failed":
                    _record_failure(cfg, summary, experiment_dir)
                summaries[cfg.run_id()] = summary
                bar.update(1)
                say(outcome_line(summary))
        finally:
            bar.close()
    return [summaries[c.run_id()] for c in configs]


def train_runs(configs: list, train: Callable, workers: int = 1, executor: str = "local",
               address: str | None = None, procs: int = 1, progress: bool = True) -> list[dict[str, Any]]:
    """``compare``'s and ``tune``'s final runs, summaries in ``configs``' order: with one local worker,
    one after another in this process (``train(cfg, progress=...)``, errors raised as they come);
    else through :func:`run_all`, handed out by :func:`interleave`, ``procs`` CPUs per run."""
    if executor == "local" and workers == 1:
        return [train(cfg, progress=progress) for cfg in configs]
    check_placement(workers, procs, executor)
    done = run_all(interleave(configs), workers, executor, address, progress,
                   functools.partial(run_one, train=train), procs, locked=True)
    by_id = {s["run_id"]: s for s in done}
    return [by_id[c.run_id()] for c in configs]


def finished_runs(configs: list, experiment_dir: Path) -> tuple[dict[str, dict], list]:
    """Summaries of the runs already finished (their runs.csv rows restored if missing), and the rest.

    An unreadable runs.csv stops here, before any training; an unreadable summary.json is left to its
    run, which reports it as that run's failure while the others go on.
    """
    from metacompare.training.runner import finished_run, run_dir

    recorded = {row["run_id"] for row in results.read_runs(experiment_dir)}
    finished, todo = {}, []
    for cfg in configs:
        try:
            finished[cfg.run_id()] = finished_run(run_dir(cfg), recorded, cfg)
        except files.FileProblem:
            todo.append(cfg)
    return finished, todo


def _record_failure(cfg, summary: dict[str, Any], experiment_dir: Path) -> None:
    from metacompare.training.runner import run_dir

    results.record_run(experiment_dir, summary)
    results.atomic_write(run_dir(cfg) / "error.txt", summary.get("traceback") or summary["error"])


def outcome_line(s: dict[str, Any]) -> str:
    """One line per finished run: id, status and score (or the error)."""
    head = f"{s['run_id']} {s['status']}"
    if s["status"] == "failed":
        return f"{head}: {s.get('error', '')}"
    if s["status"] == "diverged":
        return f"{head} at iteration {s.get('diverged_at')}"
    if not classifies(str(s.get("dataset"))):
        return f"{head}: test MSE {_fmt(s['test_loss_mean'])} ± {_fmt(s['test_loss_ci95'])}"
    return f"{head}: test accuracy {_fmt(100 * s['test_accuracy_mean'], 2)}% ± {_fmt(100 * s['test_accuracy_ci95'], 2)}%"


def _fmt(value: float, digits: int = 4) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"
