"""Choosing what a figure shows: an algorithm's best setting, one-factor slices of a sweep, labels."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from metacompare.report.experiment import Experiment
from metacompare.report.metric import Metric, num

PRETTY = {"num_tasks": "training tasks", "inner_lr": "inner learning rate", "outer_lr": "outer learning rate",
          "inner_steps": "inner steps", "meta_batch_size": "meta-batch size"}


def best_row(groups: pd.DataFrame, metric: Metric) -> pd.Series | None:
    scored = groups[np.isfinite(groups["score_mean"].to_numpy(float))]
    if scored.empty:
        return None
    index = scored["score_mean"].idxmax() if metric.higher_is_better else scored["score_mean"].idxmin()
    return scored.loc[index]


def headline(exp: Experiment, algorithm: str) -> pd.Series | None:
    """An algorithm's best setting (its only one, when nothing was swept)."""
    return best_row(exp.groups[exp.groups["algorithm"] == algorithm], exp.metric)


def headlines(exp: Experiment) -> list[pd.Series]:
    """Every algorithm's best setting, in report order; algorithms without a score are left out."""
    return [r for r in (headline(exp, a) for a in exp.algorithms()) if r is not None]


def sweep_slice(exp: Experiment, algorithm: str, free: Sequence[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """An algorithm's settings where only ``free`` fields vary; the others are fixed at their most
    common value (ties: the value of the best setting), so a one-factor sweep keeps its base."""
    rows = exp.groups[exp.groups["algorithm"] == algorithm]
    fixed = {}
    for name in exp.settings:
        if name in free:
            continue
        counts = rows[name].astype(str).value_counts()
        if counts.empty:
            continue
        top = list(counts[counts == counts.max()].index)
        best = best_row(rows, exp.metric)
        value = str(best[name]) if best is not None and str(best[name]) in top else top[0]
        rows = rows[rows[name].astype(str) == value]
        if len(counts) > 1:
            fixed[name] = rows[name].iloc[0]
    return rows, fixed


def varying_within(exp: Experiment, algorithm: str) -> list[str]:
    rows = exp.groups[exp.groups["algorithm"] == algorithm]
    return [s for s in exp.settings if rows[s].astype(str).nunique() > 1]


def label_of(exp: Experiment, row: pd.Series) -> str:
    """``maml (inner_lr=0.1)``: the algorithm and its fields that vary between its own settings."""
    parts = [f"{name}={show_value(name, row[name])}" for name in varying_within(exp, row["algorithm"])]
    return f"{row['algorithm']} ({', '.join(parts)})" if parts else str(row["algorithm"])


def show_value(name: str, value: Any) -> str:
    if name == "num_tasks" and num(value) == -1:
        return "unlimited"
    if isinstance(value, float) and value.is_integer() and name not in ("inner_lr", "outer_lr"):
        return str(int(value))
    return format(value, "g") if isinstance(value, float) else str(value)


def describe(fixed: dict[str, Any]) -> str:
    return ", ".join(f"{k}={show_value(k, v)}" for k, v in fixed.items())


def why_unscored(group: pd.Series) -> str:
    """Why a setting has no score: its runs diverged in training, failed, or ended with a NaN test score."""
    if group["diverged"]:
        return "diverged"
    if group["failed"]:
        return "failed"
    return "NaN test score" if group["finished"] else "no score"


def run_ids(row: pd.Series) -> list[str]:
    return [r for r in str(row["run_ids"]).split(";") if r]
