"""Sensitivity to each numeric swept field (learning rates, inner steps, ...), one figure per field."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from metacompare.report.draw import style
from metacompare.report.experiment import Experiment, Section
from metacompare.report.figures.common import colour, figure_section, with_band
from metacompare.report.metric import num
from metacompare.report.select import PRETTY, best_row, describe, show_value, sweep_slice, why_unscored

NOT_SWEPT_HERE = ("num_tasks", "ways", "shots", "query", "iterations", "eval_episodes", "test_episodes")


def fields(exp: Experiment) -> list[str]:
    """Swept fields with numeric values that get a figure of their own (task counts have theirs)."""
    return [s for s in exp.settings if s not in NOT_SWEPT_HERE and exp.runs[s].map(num).notna().all()]


def data(exp: Experiment, name: str) -> pd.DataFrame | None:
    """One row per algorithm and value ``x`` of ``name``, the other swept fields fixed (named in ``fixed``)."""
    frames = []
    for algorithm in exp.algorithms():
        rows, fixed = sweep_slice(exp, algorithm, [name])
        if rows[name].map(num).nunique() >= 2:
            frames.append(rows.assign(x=rows[name].map(num), fixed=describe(fixed)).sort_values("x"))
    if not frames:
        return None
    frame = pd.concat(frames, ignore_index=True)
    frame["scored"] = np.isfinite(frame["score_mean"].to_numpy(float))
    frame["reason"] = [why_unscored(r) for _, r in frame.iterrows()]
    return with_band(frame.rename(columns={"score_mean": "mean", "score_ci95": "ci95"}), exp.metric.upper)


def draw(frame: pd.DataFrame, exp: Experiment, name: str) -> Figure:
    metric = exp.metric
    fig = style.figure(7, 4.5)
    ax = fig.subplots()
    values = sorted(set(frame["x"]))
    log = values[0] > 0 and values[-1] / values[0] >= 10
    series = list(frame.groupby("algorithm", sort=False))
    for k, (algorithm, rows) in enumerate(series):
        rows = rows.assign(x=rows["x"] * style.dodge(k, len(series)) if log else rows["x"])
        label = algorithm + (f" ({rows['fixed'].iloc[0]})" if rows["fixed"].iloc[0] else "")
        style.errorbar(ax, rows[rows["scored"]], "x", marker="o", color=colour(exp, algorithm), label=label)
        lost = rows[~rows["scored"]]
        if len(lost):
            style.mark_unscored(ax, lost["x"], lost["reason"], colour(exp, algorithm))
    ax.margins(x=0.08)  # room for the labels of unscored points at the ends
    if log:
        style.log_x(ax)
    ax.set_xticks(values, [f"{v:g}" for v in values])
    scored = frame[frame["scored"]]
    style.bound_y(ax, scored["low"], scored["high"], metric)
    if not frame["scored"].all():
        style.unscored_legend(ax)
    ax.set_xlabel(PRETTY.get(name, name) + (" (log scale)" if log else ""))
    ax.set_ylabel(f"test {metric.axis}")
    ax.grid(True)
    ax.legend(fontsize=8, title="algorithm (other fields fixed); error bars: 95% CI", title_fontsize=8)
    ax.set_title(f"{exp.name}: test {metric.word} vs {PRETTY.get(name, name)}")
    return fig


def prose(frame: pd.DataFrame, exp: Experiment, name: str) -> tuple[str, str]:
    metric = exp.metric
    facts = []
    for algorithm, rows in frame.groupby("algorithm", sort=False):
        best = best_row(rows.rename(columns={"mean": "score_mean"}), metric)
        scored, bad = rows[rows["scored"]], int((~rows["scored"]).sum())
        if best is None:
            facts.append(f"{algorithm} has no score at any {name}")
            continue
        facts.append(f"{algorithm} is best at {name}={show_value(name, best[name])} "
                     f"({metric.show(best['score_mean'])}; range over values "
                     f"{metric.gap(scored['mean'].max() - scored['mean'].min())}"
                     + (f", {bad} value(s) without a score" if bad else "") + ")")
    caption = (f"Test score against {name} for each algorithm whose runs vary it, with the other swept fields "
               f"fixed at their most common value (named in the legend). Red-edged crosses at the bottom: "
               f"settings without a score (every run diverged, failed, or ended with a NaN test score).")
    return "; ".join(facts) + ".", caption


def sections(exp: Experiment, out: Path) -> list[Section]:
    made = [figure_section(exp, out, data(exp, name), f"sensitivity_{name}", f"Sensitivity to {name}",
                           partial(draw, name=name), partial(prose, name=name)) for name in fields(exp)]
    return [s for s in made if s is not None]
