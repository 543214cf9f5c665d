"""Where a run's wall time goes, and how long a comparison will take.

A run's wall time is split into phases, each charged at one point of :mod:`metacompare.training.runner`:
``training`` (meta-iterations, the budget's seconds), ``validation``, ``logging`` (the forward pass that
measures the logged training fit; both timed by :class:`metacompare.training.budget.BudgetMeter`), ``floor`` (the
untrained network on the test episodes), ``test``, ``train_tasks`` (the training-task score behind the
generalisation gap), ``rungs`` (the budget ladder's snapshots scored on the test episodes) and ``waiting``: the rest of the run's wall clock (building tasks and network,
checkpoints, files, other processes). A user who asks for 300 CPU-seconds of training learns here
what the other parts of the answer cost.
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from tqdm import tqdm

PHASES = ("training", "validation", "test", "rungs", "floor", "train_tasks", "logging", "waiting")
METERED = {"training": "train_seconds", "validation": "validation_seconds", "logging": "logging_seconds"}
TIMED = ("test", "rungs", "floor", "train_tasks")


class PhaseClock:
    """Wall seconds of the phases the runner times itself; kept in ``state`` (the runner's
    checkpointed ``extra``) so that a resumed run adds to them."""

    def __init__(self, state: dict[str, Any]):
        self.spent: dict[str, float] = state.setdefault("phases", {})

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - began


def split(wall: float, metered: dict[str, float], timed: dict[str, float]) -> dict[str, float]:
    """Every phase's wall seconds, adding up to ``wall``: the meter's counters, the clock's phases and
    ``waiting``, the remainder (never below 0: the training seconds of a data-parallel run are its
    slowest process's, measured per iteration)."""
    parts = {name: float(metered.get(key, 0.0)) for name, key in METERED.items()}
    parts.update({name: float(timed.get(name, 0.0)) for name in TIMED})
    parts["waiting"] = max(0.0, wall - sum(parts.values()))
    return {name: parts[name] for name in PHASES}


def split_table(rows: list[tuple[str, int, dict | None, float]]) -> list[dict[str, Any]]:
    """Per run (algorithm, seed, its ``time_split``, its wall seconds): the rows of the report's split
    table, with each phase's share of the run's wall time."""
    table = []
    for algorithm, seed, parts, wall in rows:
        parts = parts or {}
        table.append({"algorithm": algorithm, "seed": seed, "wall_s": round(wall, 1),
                      **{f"{name}_s": round(parts.get(name, math.nan), 1) for name in PHASES},
                      "training_share": round(parts.get("training", math.nan) / wall, 3) if wall else math.nan})
    return table


OVERHEAD = 0.3  # scoring, validation and files on top of training, the target of the own-data defaults


def run_seconds(bound: dict[str, float], procs: int, left: float = 1.0) -> float | None:
    """A first guess at one run's wall time before anything ran: its training (CPU seconds shared by
    its ``procs`` processes, or wall seconds), ``left`` of it still to do, plus :data:`OVERHEAD` of
    the whole for scoring. None for a work budget, whose seconds are not known until iterations are timed."""
    if "seconds" in bound:
        return bound["seconds"] * (left + OVERHEAD)
    if "cpu_seconds" in bound:
        return bound["cpu_seconds"] / procs * (left + OVERHEAD)
    return None


def plan_words(runs: list[tuple[str, int, float]], bound_text: str, bound: dict[str, float],
               tuning: tuple[int, dict[str, float]] | None = None, workers: int = 1) -> str:
    """What a comparison will run and a first estimate of its wall time. ``runs``: (algorithm, processes,
    the fraction of its training left: 0 finished, 1 not begun) per final run; ``tuning``: (trials in
    all, each trial's budget), if it tunes; ``workers``: runs trained at once, so the runs' wall times
    are shared among them."""
    algorithms = list(dict.fromkeys(name for name, _, _ in runs))
    seeds = len(runs) // max(1, len(algorithms))
    procs = {name: p for name, p, _ in runs}
    pending = [(name, p, left) for name, p, left in runs if left > 0]
    estimates = [run_seconds(bound, p, left) for _, p, left in pending]
    if tuning is not None:
        estimates += [run_seconds(tuning[1], 1)] * tuning[0]
    known = None if any(e is None for e in estimates) else max(sum(estimates) / workers, max(estimates, default=0))
    words = (f"compare: {len(algorithms)} algorithms x {seeds} seed(s) = {len(runs)} runs at --budget {bound_text}"
             f" each ({', '.join(f'{n} on {p} process' + ('es' if p > 1 else '') for n, p in procs.items())})")
    if tuning is not None:
        words += f", after {tuning[0]} tuning trials"
    if len(pending) < len(runs):
        words += f"; {len(runs) - len(pending)} run(s) already finished"
    if partly := sum(left < 1 for _, _, left in pending):
        words += f"; {partly} part-trained (resumed from their checkpoints)"
    if workers > 1:
        words += f"; {workers} runs at a time"
    return words + (f"; estimated wall time {duration_words(known)} (training plus about {OVERHEAD:.0%} for "
                    f"scoring; scoring takes about the same time at any budget, so a small budget takes longer)"
                    if known is not None else "; wall time: known after the first run (a work budget)")


def run_all(configs: list, train_one: Callable[[Any], dict], finished: Callable[[Any], bool],
            progress: bool = True) -> list[dict]:
    """``train_one`` over ``configs`` in order, with one progress line over the whole comparison: runs
    done and the estimated time left (tqdm's rate over the runs trained here; finished ones are read)."""
    pending = sum(not finished(c) for c in configs)
    bar = tqdm(total=pending, desc="compare", unit="run", disable=not progress or pending == 0,
               file=sys.stderr, dynamic_ncols=True, position=0)
    began, summaries, trained, own = time.perf_counter(), [], 0, 0.0
    try:
        for cfg in configs:
            done = finished(cfg)
            bar.set_postfix_str(f"{cfg.algorithm} seed {cfg.seed}", refresh=True)
            summaries.append(train_one(cfg))
            if not done:
                trained, own = trained + 1, own + summaries[-1].get("wall_time_s", 0.0)
                bar.update(1)
                if not progress:  # a plain line instead of the bar
                    spent = time.perf_counter() - began
                    print(f"compare: {trained}/{pending} runs done in {duration_words(spent)}, about "
                          f"{duration_words(spent / trained * (pending - trained))} left", file=sys.stderr)
    finally:
        bar.close()
    if trained:  # what the runs' own clocks miss: starting processes, reading the data and the results
        print(f"compare: {trained} run(s) took {duration_words(time.perf_counter() - began)} on the wall clock; "
              f"their own wall times add up to {duration_words(own)} (the rest: starting processes, reading "
              f"data)", file=sys.stderr)
    return summaries


def duration_words(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
