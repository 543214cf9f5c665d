"""Where results live and how they are written: atomically, so a crash never leaves half a file.

Layout: ``<results_dir>/<experiment>/runs.csv`` (one row per finished run) and
``<results_dir>/<experiment>/<run_id>/`` holding ``config.yaml``, ``metrics.csv``, ``summary.json``
and, while a run is unfinished, ``checkpoint.pt``.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import glob
import io
import json
import math
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from metacompare import files
from metacompare.storage import gitstate
from metacompare.errors import UserError

SUMMARY_COLUMNS = [
    "experiment", "run_id", "algorithm", "backend", "dataset", "model", "ways", "shots", "query", "num_tasks",
    "inner_lr", "inner_steps", "inner_optimizer", "outer_lr", "outer_optimizer", "meta_batch_size",
    "iterations", "eval_inner_steps", "evaluation", "precision", "seed",
    "train_shots", "test_query", "inner_batch_size", "eval_inner_batch_size", "inner_state", "inner_loss",
    "outer_lr_final", "test_checkpoint", "status", "iterations_done", "diverged_at",
    "test_accuracy_mean", "test_accuracy_ci95", "test_loss_mean", "test_loss_ci95", "test_episodes",
    "floor_accuracy_mean", "floor_accuracy_ci95", "floor_loss_mean", "floor_loss_ci95",
    "test_common_accuracy_mean", "test_common_accuracy_ci95", "test_common_loss_mean", "test_common_loss_ci95",
    "floor_common_accuracy_mean", "floor_common_accuracy_ci95", "floor_common_loss_mean", "floor_common_loss_ci95",
    "tested_checkpoint",
    "train_tasks_accuracy_mean", "train_tasks_accuracy_ci95", "train_tasks_loss_mean", "train_tasks_loss_ci95",
    "generalisation_gap",
    "wall_time_s", "seconds_per_iteration", "peak_memory_mb", "git_commit", "error",
]


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write to a temporary file beside ``path`` and rename it over: readers see old or new, never half.

    The temporary's name holds this process's id (``.<name>.<pid>.<random>.tmp``), so that clean-up
    by another process removes only the leftovers of dead writers (:func:`remove_stale_temporaries`).
    A full or read-only disk is one :class:`UserError`; ``path`` then keeps its previous content.
    """
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
        os.fchmod(fd, _mode_for(path))  # mkstemp's 0600 would make results unreadable to the group
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(err, OSError):
            raise UserError(f"{path}: cannot write ({err.strerror or err}); free space or fix permissions, "
                            f"then rerun the same command to resume") from None
        raise


def _mode_for(path: Path) -> int:
    """The permissions ``open(path, "w")`` would give: the file's own if it exists, else 0666 less
    the umask (read from /proc, since setting it to read it races with other threads)."""
    with contextlib.suppress(OSError):
        return path.stat().st_mode & 0o7777
    try:
        line = next(s for s in Path("/proc/self/status").read_text().splitlines() if s.startswith("Umask:"))
        umask = int(line.split()[1], 8)
    except (OSError, StopIteration, ValueError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def _owner_alive(temporary: Path) -> bool:
    """Whether the process named in an :func:`atomic_write` temporary is still running."""
    parts = temporary.name.split(".")
    pid = parts[-3] if len(parts) >= 4 and parts[-3].isdigit() else ""
    if not pid:
        return False  # an older name without a pid: only a dead writer could have left it by now
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_temporaries(path: Path) -> None:
    """Delete the temporary files of :func:`atomic_write` for ``path`` whose writer process is dead.

    A live writer's temporary (a second run of the same config, say) is left alone.
    """
    path = Path(path)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if not _owner_alive(stale):
            with contextlib.suppress(OSError):
                stale.unlink()


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    columns = columns or sorted({k for row in rows for k in row})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buffer.getvalue())


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file metacompare wrote (none if it does not exist), through :mod:`metacompare.files`."""
    return files.read_csv(path, "rerun the command that wrote it", missing_ok=True)


@contextlib.contextmanager
def locked(path: Path, wait: bool = True, busy: str = "") -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if absent), released on exit or process death.

    ``wait=False`` refuses at once, with the :class:`UserError` ``busy``, when another process holds it.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")
    except OSError as err:
        raise UserError(f"{path}: cannot create the lock file ({err.strerror or err}); fix the folder's "
                        f"permissions or choose another --results-dir") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise UserError(busy or f"{path}: held by another process; wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def removed_if_refused(folder: Path) -> Iterator[None]:
    """A refusal inside leaves no empty folder behind: ``folder`` and those of its parents created
    inside, when still empty at the refusal, are removed again (deepest first)."""
    folder = Path(folder).absolute()
    new = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        yield
    except BaseException:
        for path in new:
            with contextlib.suppress(OSError):
                path.rmdir()  # only an empty folder goes
        raise


WRITER_LOCK = ".writer.lock"


@contextlib.contextmanager
def experiment_lock(experiment_dir: Path, command: str) -> Iterator[None]:
    """The one lock of a results folder that a command writes as a whole (``sweep``, ``compare``,
    ``tune``): a second such command on the same folder is refused at once, naming the first, instead
    of interleaving with it. (Single ``run`` commands may share a folder: each holds its own run's
    :func:`run_lock` and updates runs.csv under the table's lock.)"""
    experiment_dir = Path(experiment_dir)
    check_writable(experiment_dir)
    path = experiment_dir / WRITER_LOCK
    holder = ["command", "?"]
    with contextlib.suppress(OSError, ValueError):
        holder = path.read_text().split()[:2] or holder
    busy = (f"{experiment_dir}: another {holder[0]} is running on this results folder (process "
            f"{holder[-1]} holds {path}); wait for it to finish or use another --results-dir")
    with locked(path, wait=False, busy=busy):
        with contextlib.suppress(OSError):
            path.write_text(f"{command} {os.getpid()}\n")  # whom a refused command names
        yield


@contextlib.contextmanager
def run_lock(run_folder: Path) -> Iterator[None]:
    """One process trains a run at a time: two ``run`` commands on one config, or a ``run`` beside a
    ``compare`` that trains the same run, would each train it and write its checkpoint. The second
    waits (saying so) for the first to end, then reads the finished run, or resumes it if the first
    was stopped. An ``flock`` on the run folder itself (created, writable, and removed again if
    empty at a refusal inside), so that nothing is left behind, released however the process ends."""
    with removed_if_refused(run_folder):
        check_writable(run_folder)
        handle = os.open(run_folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"metacompare: {run_folder}: another process is training this run; waiting for it to end "
                      f"(then this one reads or resumes it)", file=sys.stderr, flush=True)
                fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        finally:
            os.close(handle)


# ------------------------------------------------------------------------------ runs.csv rows
RUNS_FIX = ("move it aside (e.g. to runs.csv.bad) and rerun: finished runs get their rows back from "
            "their summary.json")
NUMERIC_COLUMNS = ("ways", "shots", "query", "num_tasks", "inner_lr", "inner_steps", "outer_lr",
                   "meta_batch_size", "iterations", "eval_inner_steps", "seed", "iterations_done",
                   "diverged_at", "test_accuracy_mean", "test_accuracy_ci95", "test_loss_mean",
                   "test_loss_ci95", "test_episodes", "wall_time_s", "seconds_per_iteration", "peak_memory_mb")
STATUSES = ("finished", "diverged", "failed")
SUMMARY_FIX = "delete it to redo this run (or restore it from a copy)"


def read_runs(experiment_dir: Path) -> list[dict[str, str]]:
    """The rows of ``<experiment_dir>/runs.csv`` (none if it does not exist yet), checked strictly:
    one row per run id (metacompare never writes two; a second is a hand edit or a merge)."""
    table = Path(experiment_dir) / "runs.csv"
    rows = files.read_csv(table, RUNS_FIX, required=("run_id", "status"), known=SUMMARY_COLUMNS,
                          numeric=NUMERIC_COLUMNS, missing_ok=True)
    lines: dict[str, int] = {}
    for number, row in enumerate(rows, 2):
        if row["status"] not in STATUSES or not row["run_id"]:
            files.fail(table, f"line {number}: run_id {row['run_id']!r} with status {row['status']!r} "
                              f"(expected one of {', '.join(STATUSES)})", RUNS_FIX)
        if row["run_id"] in lines:
            files.fail(table, f"lines {lines[row['run_id']]} and {number} both hold run {row['run_id']}",
                       "delete one of them: the table holds one row per run")
        lines[row["run_id"]] = number
    return rows


def read_runs_frame(experiment_dir: Path) -> "pd.DataFrame":
    """``runs.csv`` checked by :func:`read_runs`, then as a DataFrame (numbers parsed by pandas)."""
    import pandas as pd

    table = Path(experiment_dir) / "runs.csv"
    read_runs(experiment_dir)
    return pd.read_csv(io.StringIO(files.read_text(table, RUNS_FIX)))


RUN_FILE_FIX = "delete the run folder and rerun the command that made it to redo the run"


def read_metrics(run_folder: Path) -> "pd.DataFrame | None":
    """A run's ``metrics.csv`` (validation after each evaluation), or None where the run wrote none. A
    finished run's summary says how many rows it wrote, so a file cut exactly at a line end is refused
    too (a run finished before that count was kept is read as it is)."""
    path = Path(run_folder) / "metrics.csv"
    if not path.exists():
        return None
    summary = Path(run_folder) / "summary.json"
    rows = files.read_json(summary, SUMMARY_FIX).get("metrics_rows") if summary.exists() else None
    rows = rows if isinstance(rows, int) and not isinstance(rows, bool) else None
    return files.read_frame(path, RUN_FILE_FIX, blank_ok=not rows, rows=rows)


def read_episodes(run_folder: Path, episodes: int | None = None) -> "pd.DataFrame | None":
    """A finished run's ``episodes.csv`` (one score per test episode), or None where the run wrote none;
    ``episodes``: how many test episodes the run was scored on, so a file cut short is refused, not
    paired on fewer episodes."""
    path = Path(run_folder) / EPISODES_FILE
    if not path.exists():
        return None
    return files.read_frame(path, RUN_FILE_FIX, required=("episode",), rows=episodes)


EPISODES_FILE = "episodes.csv"


def read_summary(path: Path) -> dict[str, Any]:
    """A run's ``summary.json``: a JSON object with at least its run id, status and config."""
    summary = files.read_json(path, SUMMARY_FIX, required={"run_id": str, "status": str, "config": dict})
    if summary["status"] not in STATUSES:
        files.fail(path, f"status {summary['status']!r} is not one of {', '.join(STATUSES)}", SUMMARY_FIX)
    return summary


def summary_row(cfg, **fields: Any) -> dict[str, Any]:
    """A run's summary: its config's table columns, its run id, the whole config, then ``fields``.

    The one builder for every outcome (finished, diverged, failed), so they share one schema.
    """
    config = cfg.to_dict()
    return {**{k: v for k, v in config.items() if k in SUMMARY_COLUMNS}, "run_id": cfg.run_id(),
            **fields, "config": config}


def record_run(experiment_dir: Path, summary: dict[str, Any]) -> None:
    """Add (or replace) this run's row in ``runs.csv``; one row per run id, never two."""
    table = Path(experiment_dir) / "runs.csv"
    with locked(Path(experiment_dir) / ".runs.lock"):
        remove_stale_temporaries(table)
        rows = [r for r in read_runs(experiment_dir) if r.get("run_id") != summary["run_id"]]
        rows.append({k: summary.get(k, "") for k in SUMMARY_COLUMNS})
        write_csv(table, rows, SUMMARY_COLUMNS)


def forget_run(experiment_dir: Path, run_id: str) -> None:
    """Drop ``run_id``'s row from ``runs.csv`` (a forced rerun is not finished until it ends again)."""
    table = Path(experiment_dir) / "runs.csv"
    with locked(Path(experiment_dir) / ".runs.lock"):
        rows = read_runs(experiment_dir)
        if any(r["run_id"] == run_id for r in rows):
            write_csv(table, [r for r in rows if r["run_id"] != run_id], SUMMARY_COLUMNS)


def t_critical(n: int) -> float:
    """95% two-sided Student-t quantile for a mean of ``n`` values (``scipy.stats.t``): with 2-3 seeds
    the normal 1.96 would claim an interval 2-6x too narrow. Undefined (NaN) below two values."""
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1)) if n >= 2 else math.nan


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its Student-t 95% confidence interval; the interval of fewer than
    two values is undefined (NaN), not zero."""
    array = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if array.size == 0:
        return math.nan, math.nan
    if array.size == 1:
        return float(array[0]), math.nan
    return float(array.mean()), float(t_critical(array.size) * array.std(ddof=1) / math.sqrt(array.size))


def library_versions() -> dict[str, str]:
    import higher
    import torch

    from metacompare._l2l import l2l

    return {"python": platform.python_version(), "torch": torch.__version__, "learn2learn": l2l.__version__,
            "higher": getattr(higher, "__version__", "0.2.1"), "numpy": np.__version__}


def check_writable(directory: Path, name: str = "results_dir", option: str = "--results-dir") -> None:
    """Fail early, before any training (or race), if results cannot be written, or may not be from
    uncommitted code (:func:`metacompare.storage.gitstate.guard`: every command that records results
    passes here); ``name`` and ``option``: the setting and the command-line option that chose the folder."""
    directory = Path(directory)
    gitstate.guard([directory], option=option)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except OSError as err:
        raise UserError(f"{name}: cannot write to {directory} ({err.strerror}); "
                        f"choose another with {option} or fix its permissions") from None


def save_json(path: Path, payload: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(payload, indent=2, default=str, allow_nan=True) + "\n")
