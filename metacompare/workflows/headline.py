"""The opening of a comparison's answer when its winner is no winner.

A ranking names a best algorithm even when none of them learned anything within the budget: on the
digits table at 15 CPU-seconds the "winner" scored below its own untrained network. So before a winner
is named, each algorithm is tested against its untrained network (its floor) on the test episodes both
were scored on (paired: the floor is scored per episode on the first ``floor_episodes`` test episodes,
:func:`metacompare.training.scoring.floor_count`), Holm-corrected over the algorithms; and a meta-learner that
wins is tested against the pre-training baseline. Where the honest reading is "nothing learned" or "no
better than pre-training", the answer opens with that and suggests a budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from metacompare.report.stats import ALPHA, holm, paired_test

BASELINE = "pretrain"  # the supervised pre-training baseline (Chen et al. 2019)
LARGER = 4  # the suggested budget: this many times the one given


@dataclass(frozen=True)
class FloorTest:
    """One algorithm against its untrained network on shared test episodes (``difference``: score minus
    floor, in the direction where positive is better)."""

    algorithm: str
    n: int
    difference: float
    difference_ci95: float
    p_holm: float

    @property
    def learned(self) -> bool:
        return self.difference > 0 and math.isfinite(self.p_holm) and self.p_holm < ALPHA


def floor_tests(pairs: pd.DataFrame, higher_is_better: bool) -> dict[str, FloorTest]:
    """Per algorithm, its per-episode scores against its floor's on the same (seed, episode) units.

    ``pairs``: one row per (algorithm, seed, episode) with ``score`` and ``floor`` (NaN where that
    episode has no floor score)."""
    sign = 1.0 if higher_is_better else -1.0
    raw = {}
    for name, group in pairs.dropna(subset=["score", "floor"]).groupby("algorithm", sort=False):
        raw[name] = paired_test(sign * group["score"].to_numpy(), sign * group["floor"].to_numpy())
    adjusted = holm([r["t_p"] for r in raw.values()])
    return {name: FloorTest(name, r["n"], r["difference"], r["difference_ci95"], float(p))
            for (name, r), p in zip(raw.items(), adjusted)}


def suggested_budget(bound: dict[str, float], factor: float = LARGER) -> str:
    """``--budget`` text for ``factor`` times ``bound``."""
    (kind, amount), = ((k, v) for k, v in bound.items() if k in ("seconds", "cpu_seconds", "work"))
    prefix = {"seconds": "", "cpu_seconds": "cpu:", "work": "work:"}[kind]
    return f"{prefix}{factor * amount:g}"


def opening(best: str, tests: dict[str, FloorTest], baseline_row: pd.Series | None, bound: dict[str, float],
            show, gap, learned_at: dict[str, list[str]] | None = None) -> str | None:
    """The answer's first sentences when the ranking alone would mislead, else None.

    ``best``: the top-ranked algorithm; ``tests``: :func:`floor_tests`; ``baseline_row``: the paired
    comparison (over test episodes) of ``best`` with the pre-training baseline, if both ran;
    ``learned_at``: budget text -> the algorithms that beat their floor at that smaller budget (the
    budget ladder, smallest first), if there is one; ``show``/``gap``: how scores and differences print."""
    if best in tests and not tests[best].learned:
        return _nothing_learned(best, tests, bound, gap, learned_at or {})
    if baseline_row is not None and best != BASELINE and not _beats(baseline_row, best):
        sign = 1 if baseline_row["a"] == best else -1
        return (f"**Answer: no meta-learner beats pre-training within this budget.** {best} ranks first, but on "
                f"{int(baseline_row['n'])} shared test episodes it is {gap(sign * baseline_row['difference'])} "
                f"± {gap(baseline_row['difference_ci95'])} from the pre-training baseline ({BASELINE}; paired t, "
                f"Holm-corrected p = {baseline_row['t_p_holm']:.3g}): the plain supervised network does as well "
                f"here. A larger budget may separate them (e.g. --budget {suggested_budget(bound)}).")
    return None


def _nothing_learned(best: str, tests: dict[str, FloorTest], bound: dict[str, float], gap,
                     learned_at: dict[str, list[str]]) -> str:
    test = tests[best]
    others = [t.algorithm for t in tests.values() if t.learned]
    words = f"{best} scores best, but {_versus(test, gap)}; "
    if others:
        head = (f"**Answer: the best-scoring algorithm, {best}, did not learn within this budget;** "
                f"only {', '.join(others)} beat{'s' if len(others) == 1 else ''} {'its' if len(others) == 1 else 'their'} "
                f"untrained network. ")
    else:
        head = "**Answer: no algorithm learned within this budget.** "
        words = f"No algorithm beats its untrained network: {best} scores best, but {_versus(test, gap)}; "
    smallest = next((label for label, names in learned_at.items() if names), None)
    if smallest is not None:
        words += f"at the smaller budget {smallest}, {', '.join(learned_at[smallest])} did; "
    return (head + words + f"run a larger budget (e.g. --budget {suggested_budget(bound)}, {LARGER}x this one) "
            f"before reading a winner from the table below.")


def _versus(test: FloorTest, gap) -> str:
    if test.n < 2:
        return "too few test episodes have a floor score to tell it from its untrained network"
    return (f"its gain over its untrained network is {gap(test.difference)} ± {gap(test.difference_ci95)} on "
            f"{test.n} paired test episodes (Holm-corrected p = {test.p_holm:.3g})")


def _beats(row: pd.Series, best: str) -> bool:
    return str(row["verdict"]) == f"{best} beats {BASELINE}"


def floor_pairs(frames: list[tuple[str, int, pd.DataFrame]], column: str) -> pd.DataFrame:
    """(algorithm, seed, episode, score, floor) rows from the runs' ``episodes.csv`` frames; ``column``:
    the ranking column (``test_accuracy``/``test_loss``), whose floor is ``floor_accuracy``/``floor_loss``."""
    floor = "floor_" + column.removeprefix("test_")
    rows = [pd.DataFrame({"algorithm": name, "seed": seed, "episode": frame["episode"], "score": frame[column],
                          "floor": frame[floor] if floor in frame else np.nan})
            for name, seed, frame in frames if column in frame]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["algorithm", "seed", "episode", "score", "floor"])
