"""Writing ``<experiment>/report/`` atomically: the whole report is made in a new folder beside it,
then renamed into place, so a crash or Ctrl-C part-way leaves the previous report whole.

Concurrent reports of one experiment (two runs ending together) take turns under a lock; a folder
left by a killed report is removed by the next one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterator

from metacompare.storage import provenance, results
from metacompare.errors import UserError
from metacompare.report.draw import style
from metacompare.report.experiment import Experiment, Section, analyse
from metacompare.report.figures import (adaptation_steps, baselines, cost, generalisation, heatmap, learning_curves,
                                        pairwise, sensitivity, table, task_counts)
from metacompare.report.page import html_page, markdown, markdown_table

REPORT = "report"
TEMP_PREFIX = f".{REPORT}.new-"
OLD_PREFIX = f".{REPORT}.old-"
FIGURES: tuple[Callable[[Experiment, Path], Section | list[Section] | None], ...] = (
    learning_curves.section, task_counts.section, baselines.section, heatmap.section, sensitivity.sections,
    cost.section, adaptation_steps.section, generalisation.section)


def build(exp: Experiment, out: Path) -> list[Section]:
    """Every section of the report, drawing its figures into ``out``, numbered 1, 2, 3, ... in the
    order shown (a figure with no data is left out, so a fixed label per figure would leave gaps)."""
    sections = [table.section(exp)]
    with style.styled():
        for make in FIGURES:
            made = make(exp, out)
            sections.extend(made if isinstance(made, list) else [made] if made else [])
    paired = pairwise.section(exp)
    sections += [paired] if paired else []
    return [dataclasses.replace(s, title=f"{number}. {s.title}") for number, s in enumerate(sections, 1)]


def fill(exp: Experiment, out: Path) -> Path:
    """Write tables, figures, report.md and report.html into the (empty) folder ``out``."""
    sections = build(exp, out)
    results.atomic_write(out / "table.csv", table.csv_table(exp).to_csv(index=False))
    results.atomic_write(out / "table.md", markdown_table(sections[0].table) + "\n")
    paired = pairwise.data(exp)
    if not paired.empty:  # the verdict table, for scripts
        results.atomic_write(out / "pairwise.csv", paired.to_csv(index=False))
    n = len(exp.runs)
    intro = (f"Made by `metacompare report` from {exp.directory}/runs.csv and the run folders beside it "
             f"({n} run{'s' if n != 1 else ''}). Score: {exp.metric.name} ({exp.metric.direction}). The table is "
             f"also in table.csv and table.md; every figure is also an SVG.")
    warning = provenance.report_warning(exp.runs.get("git_commit", []))  # runs made from uncommitted code
    intro = f"{warning}\n\n{intro}" if warning else intro
    results.atomic_write(out / "report.md", markdown(exp, intro, sections))
    results.atomic_write(out / "report.html", html_page(exp, intro, sections))
    return out / "report.md"


def write_report(experiment_dir: Path) -> Path:
    """Write ``<experiment_dir>/report/`` (tables, figures, report.md/html); return report.md's path."""
    exp = analyse(experiment_dir)
    target = exp.directory / REPORT
    with results.locked(exp.directory / f".{REPORT}.lock"):
        _remove_leftovers(exp.directory)
        staging = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=exp.directory))
        try:
            fill(exp, staging)
            os.chmod(staging, 0o755)  # mkdtemp makes it private; a report is for reading
            _swap_into_place(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target / "report.md"


def _remove_leftovers(directory: Path) -> None:
    """Folders of a report killed part-way (only called under the report lock)."""
    for stale in list(directory.glob(f"{TEMP_PREFIX}*")) + list(directory.glob(f"{OLD_PREFIX}*")):
        shutil.rmtree(stale, ignore_errors=True)


def _swap_into_place(staging: Path, target: Path) -> None:
    """Rename the finished report over the old one; Ctrl-C and SIGTERM wait until both renames are done."""
    old = target.parent / f"{OLD_PREFIX}{os.getpid()}"
    with _signals_deferred():
        if target.exists():
            os.rename(target, old)
        try:
            os.rename(staging, target)
        except BaseException:
            if old.exists():
                os.rename(old, target)
            raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM for the two renames (main thread only; elsewhere signals do not arrive)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def report(results_dir: Path) -> list[Path]:
    """Report one experiment folder, or every experiment folder directly inside ``results_dir``."""
    results_dir = Path(results_dir)
    if (results_dir / "runs.csv").is_file():
        return [write_report(results_dir)]
    experiments = sorted(p for p in results_dir.glob("*/runs.csv")) if results_dir.is_dir() else []
    if not experiments:
        raise UserError(f"{results_dir}: neither an experiment folder (with runs.csv) nor a folder of them; "
                        f"give e.g. results/sine or results")
    return [write_report(p.parent) for p in experiments]
