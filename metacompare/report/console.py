"""What the commands print about results: one line per finished run, and the reports of many
experiments written under one progress bar."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from metacompare.errors import UserError
from metacompare.report.write import write_report
from metacompare.storage.results import read_runs
from metacompare.data.source import classifies


def summary_line(s: dict[str, Any]) -> str:
    """A run's score, its interval, its cost and its folder, as ``run`` and ``tune`` print it."""
    if s["status"] != "finished":
        return f"{s['algorithm']}: {s['status']} at iteration {s.get('diverged_at')} ({s['run_id']})"
    if not classifies(str(s["dataset"])):
        score = f"test MSE {s['test_loss_mean']:.4f} ± {s['test_loss_ci95']:.4f}"
    else:
        score = f"test accuracy {100 * s['test_accuracy_mean']:.2f}% ± {100 * s['test_accuracy_ci95']:.2f}%"
    return (f"{s['algorithm']:>8}: {score} (95% CI, {s['test_episodes']} episodes), "
            f"{s['seconds_per_iteration']:.3f} s/iteration, peak {s['peak_memory_mb']:.0f} MB "
            f"-> {Path(s['config']['results_dir']) / s['experiment'] / s['run_id']}")


def experiment_folders(folder: str | Path) -> list[Path]:
    """``folder`` itself when it is an experiment (it holds runs.csv), else the experiments inside it."""
    folder = Path(folder)
    found = [folder] if (folder / "runs.csv").exists() else sorted(
        p.parent for p in folder.glob("*/runs.csv")) if folder.is_dir() else []
    if not found:
        raise UserError(f"{folder}: neither an experiment folder (with runs.csv) nor a folder of them; "
                        f"give e.g. results/sine or results")
    return found


def write_reports(experiments: list[Path], progress: bool = True, keep_going: bool = False) -> int:
    """Write each experiment's report, printing its path; return how many could not be read. With
    ``keep_going`` an unreadable results table is one error line and the other reports are still
    written. Each report is written atomically: a stop leaves the previous one whole."""
    bar = tqdm(experiments, desc="report", unit="experiment", disable=not progress, file=sys.stderr,
               dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30.0)
    failed = 0
    for directory in bar:
        bar.set_postfix_str(directory.name)
        try:
            read_runs(directory)  # the results table, strictly: a broken one is one line, not a traceback
            bar.write(f"report: {write_report(directory)}", file=sys.stdout)
        except UserError as err:
            if not keep_going:
                raise
            print(f"metacompare: error: {err}", file=sys.stderr)
            failed += 1
        except KeyboardInterrupt as err:
            err.user_message = "the previous report is left as it was"  # what the command's stop line says
            raise
    return failed

