"""The budget ladder: one run's answer at B/2^k, ..., B/4, B/2 and B, from snapshots of that run.

A run with ``budget_rungs: n`` saves its weights (the whole algorithm state) into
``snapshots/budget_1-<2^k>.pt`` the moment its training crosses each smaller rung's budget, that is
where a run of its own with that budget would have stopped (:func:`rung_config` is that run, and its
:class:`~metacompare.training.budget.BudgetMeter` says when). At test time each snapshot is scored on the run's
test episodes with the run's test procedures, and ``rungs.csv`` holds every rung's per-episode scores,
the top rung (the run itself) included, so that a comparison can pair algorithms within each rung.

A snapshot is not a run of its own: a schedule that follows the fraction of the budget spent (an
annealed outer step, a cosine rate, MAML++'s MSL and derivative-order switches) is mid-way through at
a lower rung; ``experiments/ladder_deviation.py`` measures how far that moves the test score.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from metacompare.training import budget, scoring

from metacompare.engines import distributed

from metacompare import files

from metacompare.storage import results
from metacompare.config.runconfig import RunConfig
from metacompare.training import checkpoint

FOLDER = "snapshots"
RUNGS_FILE = "rungs.csv"
RUNG_COLUMNS = ["rung", "fraction", "iteration", "train_seconds", "train_cpu_seconds", "work", "episode"]
SNAPSHOT_FIX = "delete the run's snapshots folder and its checkpoint.pt to retrain it, or rerun with --force"


def fractions(rungs: int) -> list[float]:
    """The rungs below the top, smallest first: 5 rungs give 1/16, 1/8, 1/4, 1/2 (the top, 1, is the run)."""
    return [2.0 ** -k for k in range(rungs - 1, 0, -1)]


def rung_name(fraction: float) -> str:
    """``1/16`` for 0.0625; ``1`` for the top rung."""
    return "1" if fraction == 1 else f"1/{round(1 / fraction)}"


def rung_config(cfg: RunConfig, fraction: float) -> RunConfig:
    """The run of its own at a rung: ``cfg`` with every set budget scaled by ``fraction``, or, without a
    budget, its iterations (never below one)."""
    bound = cfg.budget
    scaled = {kind: getattr(bound, kind) * fraction for kind in ("seconds", "cpu_seconds", "work")
              if getattr(bound, kind) is not None}
    if scaled:
        return dataclasses.replace(cfg, budget=dataclasses.replace(bound, **scaled))
    return dataclasses.replace(cfg, iterations=max(1, round(cfg.iterations * fraction)))


class Ladder:
    """Takes a run's snapshots as training crosses each rung, and scores them at test time.

    What was taken lives in ``extra["rungs"]`` (the runner's checkpointed state) and its counters are
    the run's own meter's (``extra["budget"]``), so a resumed run neither loses a snapshot nor takes one
    twice: a kill after a snapshot but before the next checkpoint retakes it on the same iteration.
    """

    def __init__(self, cfg: RunConfig, work_per_iteration: float, extra: dict[str, Any], out: Path):
        self.cfg, self.folder = cfg, out / FOLDER
        self.taken: dict[str, dict[str, float]] = extra.setdefault("rungs", {})
        self.meters = {rung_name(f): (f, budget.BudgetMeter(rung_config(cfg, f), work_per_iteration,
                                                            {"budget": extra["budget"]}))
                       for f in fractions(cfg.budget_rungs)}
        for path in [out / RUNGS_FILE, *map(self.path, self.meters)]:  # leftovers of a killed writer
            results.remove_stale_temporaries(path)

    def path(self, name: str) -> Path:
        return self.folder / f"budget_{name.replace('/', '-')}.pt"

    def cross(self, iteration: int, algorithm, extra: dict[str, Any]) -> None:
        """Snapshot every rung whose run of its own would stop after ``iteration`` iterations. Under
        ``test_checkpoint: best`` that is the best-validated state so far, as its own run would test."""
        for name, (fraction, meter) in self.meters.items():
            if name in self.taken or not meter.spent(iteration):
                continue
            if distributed.is_writer():
                state = extra.get("best_state") if self.cfg.test_checkpoint == "best" else None
                self.folder.mkdir(parents=True, exist_ok=True)
                checkpoint.write(self.path(name), state or algorithm.state_dict())
            self.taken[name] = {"fraction": fraction, "iteration": iteration, **meter.row()}

    def score(self, algorithm, episodes: list, device, dtype) -> list[dict[str, Any]]:
        """Per-episode test scores of every rung taken, on ``episodes`` with the run's own test procedure
        (batched where ``eval_batch`` is set, as the run's own test; a config's common procedure is scored
        at the full budget only: the ladder compares each algorithm as its authors test it); the
        algorithm's state is restored."""
        todo = sorted((item for item in self.taken.items() if item[0] in self.meters),  # not: another budget_rungs
                      key=lambda item: item[1]["fraction"])
        if not todo:
            return []
        own_procedure = dataclasses.replace(self.cfg, common_evaluation=None)
        kept = copy.deepcopy(algorithm.state_dict())  # state_dict() shares the live tensors loading overwrites
        rows = []
        for name, taken in todo:
            snapshot = distributed.from_writer(files.load_torch(self.path(name), SNAPSHOT_FIX)
                                               if distributed.is_writer() else None)
            algorithm.load_state_dict(snapshot)
            columns: dict[str, list] = {}
            scoring.score_test(algorithm, episodes, own_procedure, device, dtype, "test_", columns)
            rows += _rows(name, taken, columns)
        algorithm.load_state_dict(kept)
        return rows

    def write(self, out: Path, rows: list[dict[str, Any]], top: dict[str, float], final: dict[str, list]) -> None:
        """``rungs.csv``: the snapshots' rows, then the top rung's: the run's own test columns ``final``
        at its last meter reading ``top``, so that its scores are the run's exactly. None without a ladder."""
        if self.cfg.budget_rungs < 2:
            return
        rows = rows + _rows("1", {"fraction": 1.0, **top}, final)
        results.write_csv(out / RUNGS_FILE, rows, RUNG_COLUMNS + list(final))


def _rows(name: str, taken: dict[str, float], columns: dict[str, list]) -> list[dict[str, Any]]:
    count = len(next(iter(columns.values()), []))
    head = {"rung": name, **{k: taken.get(k) for k in RUNG_COLUMNS[1:-1]}}
    return [{**head, "episode": i, **{k: v[i] for k, v in columns.items()}} for i in range(count)]


def read(out: Path, column: str, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """A finished run's rungs as rows ``rung, fraction, iteration, ..., episode, score`` (``column``'s
    per-episode value). A run without ``rungs.csv`` (finished before it had a ladder) gives its top
    rung alone, from ``episodes.csv`` and its summary; a run with neither gives nothing."""
    fix = "rerun the comparison: the run is retested (or delete the run folder to retrain it)"
    rungs = files.read_csv(out / RUNGS_FILE, fix, required=[*RUNG_COLUMNS, column],
                           numeric=[*RUNG_COLUMNS[1:], column], missing_ok=True)
    if not rungs:
        top = {"rung": "1", "fraction": 1.0, "iteration": summary.get("iterations_done"),
               **{k: summary.get(k) for k in RUNG_COLUMNS[3:-1]}}
        rungs = [{**top, **row} for row in files.read_csv(out / "episodes.csv", fix, required=["episode", column],
                                                          numeric=["episode", column], missing_ok=True)]
    return [{"rung": row["rung"], **{k: files.number(row[k]) for k in RUNG_COLUMNS[1:]},
             "score": files.number(row[column])} for row in rungs]


def stack(runs: list[tuple[RunConfig, dict[str, Any], Path]], column: str) -> pd.DataFrame:
    """Every finished run's rungs (:func:`read`) as one frame with its ``algorithm`` and ``seed``: those
    of ``cfg.budget_rungs`` only (a run trained with more rungs than asked for now holds others too);
    a warning names the rungs asked for that a run does not hold (see :func:`absent`)."""
    rows = [{"algorithm": cfg.algorithm, "seed": cfg.seed, **row} for cfg, summary, out in runs
            if summary.get("status") == "finished" for row in read(out, column, summary)
            if row["fraction"] in (*fractions(cfg.budget_rungs), 1.0)]
    stacked = pd.DataFrame(rows, columns=["algorithm", "seed", "rung", *RUNG_COLUMNS[1:], "score"])
    if missing := absent(stacked, [cfg for cfg, _, _ in runs]):
        warnings.warn(f"budget ladder of {runs[0][0].budget_rungs} rungs: finished runs in {runs[0][2].parent} hold "
                      f"no snapshot at {', '.join(missing)} of the budget (they trained with fewer rungs, and a "
                      f"snapshot cannot be taken afterwards); the ladder shows the rungs they hold. For the others, "
                      f"compare into another --results-dir", stacklevel=2)
    return stacked


def absent(stacked: pd.DataFrame, runs: list[RunConfig]) -> list[str]:
    """The rungs asked for (``budget_rungs``) that some finished run in ``stacked`` does not hold: it
    trained with fewer rungs, and a snapshot cannot be taken after the fact."""
    held = stacked.groupby(["algorithm", "seed"])["fraction"].agg(set).to_dict()
    wanted = {f for cfg in runs if (cfg.algorithm, cfg.seed) in held
              for f in fractions(cfg.budget_rungs) if f not in held[cfg.algorithm, cfg.seed]}
    return [rung_name(f) for f in sorted(wanted)]
