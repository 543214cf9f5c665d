"""Where results live and how they are written: atomically, so a crash never leaves half a file.

Layout: ``<results_dir>/<experiment>/runs.csv`` (one row per finished run) and
``<results_dir>/<experiment>/<run_id>/`` holding ``config.yaml``, ``metrics.csv``, ``summary.json``
and, while a run is unfinished, ``checkpoint.pt``.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import math
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

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
    "wall_time_s", "seconds_per_iteration", "peak_memory_mb", "git_commit", "error",
]


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write to a temporary file beside ``path`` and rename it over: readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(path: Path) -> None:
    """Delete the temporary files of :func:`atomic_write` for ``path`` that a killed process left.

    Only call this where no other process can be writing ``path`` (under its lock, or in a run folder
    that this process owns).
    """
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    columns = columns or sorted({k for row in rows for k in row})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buffer.getvalue())


def read_csv(path: Path) -> list[dict[str, str]]:
    if not Path(path).is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if absent), released on exit or process death."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def record_run(experiment_dir: Path, summary: dict[str, Any]) -> None:
    """Add (or replace) this run's row in ``runs.csv``; one row per run id, never two."""
    table = Path(experiment_dir) / "runs.csv"
    with locked(Path(experiment_dir) / ".runs.lock"):
        remove_stale_temporaries(table)  # every writer of runs.csv holds this lock, so none is live
        rows = [r for r in read_csv(table) if r.get("run_id") != summary["run_id"]]
        rows.append({k: summary.get(k, "") for k in SUMMARY_COLUMNS})
        write_csv(table, rows, SUMMARY_COLUMNS)


# Two-sided 95% quantiles of Student's t for 1-30 degrees of freedom.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t_critical(n: int) -> float:
    """95% two-sided Student-t quantile for a mean of ``n`` values: with 2-3 seeds the normal 1.96
    would claim an interval 2-6x too narrow. Beyond 30 degrees of freedom 1.96 + 2.4/df is within 0.002."""
    df = n - 1
    return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.4 / df


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its Student-t 95% confidence interval."""
    array = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if array.size == 0:
        return math.nan, math.nan
    if array.size == 1:
        return float(array[0]), 0.0
    return float(array.mean()), float(t_critical(array.size) * array.std(ddof=1) / math.sqrt(array.size))


def git_commit() -> str:
    """The project's commit (with ``+dirty`` when code outside results/ has changes), or 'unknown'
    outside git; see :mod:`metacompare.provenance`."""
    from metacompare.provenance import tree_state

    return tree_state().label()


def library_versions() -> dict[str, str]:
    import higher
    import torch

    from metacompare._l2l import l2l

    return {"python": platform.python_version(), "torch": torch.__version__, "learn2learn": l2l.__version__,
            "higher": getattr(higher, "__version__", "0.2.1"), "numpy": np.__version__}


def check_writable(directory: Path) -> None:
    """Fail early, before any training, if results cannot be written."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except OSError as err:
        raise UserError(f"results_dir: cannot write to {directory} ({err.strerror}); "
                        f"choose another with --results-dir or fix its permissions") from None


def save_json(path: Path, payload: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(payload, indent=2, default=str, allow_nan=True) + "\n")
