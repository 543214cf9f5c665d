"""Generalisation (the outline's question 9.4): the score on fresh tasks of the *training* classes
against the score on the test classes, and their gap, per algorithm and, in a task-count study, per
number of training tasks (more tasks should shrink the gap)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from metacompare.report.draw import style
from metacompare.report.experiment import Experiment, Section
from metacompare.report.figures.common import colour, figure_section
from metacompare.report.metric import num


def data(exp: Experiment) -> pd.DataFrame | None:
    """One row per algorithm (and task count): mean over finished runs of the train-class score, the
    test score and ``gap`` = train-class − test (in the metric's display units), with the run count."""
    metric = exp.metric
    word = metric.column.removeprefix("test_")
    seen = f"train_tasks_{word}_mean"
    runs = exp.runs
    if seen not in runs or runs[seen].isna().all():
        return None
    runs = runs[(runs["status"] == "finished") & np.isfinite(pd.to_numeric(runs[seen], errors="coerce"))]
    keys = ["algorithm"] + (["num_tasks"] if "num_tasks" in exp.settings else [])
    rows = []
    for values, group in runs.groupby(keys, sort=False):
        values = values if isinstance(values, tuple) else (values,)
        train = pd.to_numeric(group[seen]).mean() * metric.scale
        test = pd.to_numeric(group[f"{metric.column}_mean"]).mean() * metric.scale
        rows.append({**dict(zip(keys, values)), "train_classes": train, "test_classes": test,
                     "gap": train - test, "runs": len(group)})
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    if "num_tasks" in frame:
        frame["n"] = frame["num_tasks"].map(num)
        finite = frame.loc[frame["n"] > 0, "n"]
        frame["position"] = frame["n"].where(frame["n"] != -1, (finite.max() if len(finite) else 1) * 10)
        frame = frame.sort_values(["algorithm", "position"], kind="stable")
    return frame.reset_index(drop=True)


def draw(frame: pd.DataFrame, exp: Experiment) -> Figure:
    fig = style.figure(7, 4.5)
    ax = fig.subplots()
    metric = exp.metric
    if "position" in frame:
        for algorithm, rows in frame.groupby("algorithm", sort=False):
            ax.plot(rows["position"], rows["gap"], "o-", color=colour(exp, algorithm), label=algorithm)
        style.log_x(ax)
        ax.set_xlabel("number of distinct meta-training tasks (log scale; rightmost: a fresh task each draw)")
    else:
        x = np.arange(len(frame))
        ax.bar(x - 0.2, frame["train_classes"], 0.4, color="lightgray", edgecolor="black", label="training classes")
        ax.bar(x + 0.2, frame["test_classes"], 0.4, color=[colour(exp, a) for a in frame["algorithm"]],
               edgecolor="black", label="test classes")
        ax.set_xticks(x, frame["algorithm"])
        ax.set_ylim(0, metric.upper if metric.is_accuracy else None)
    ax.set_ylabel(f"{metric.axis}" if "position" not in frame else f"gap: training − test classes ({metric.word})")
    ax.grid(True)
    ax.legend(fontsize=8)
    ax.set_title(f"{exp.name}: generalisation from training to test classes")
    return fig


def prose(frame: pd.DataFrame, exp: Experiment) -> tuple[str, str]:
    metric = exp.metric
    facts = [f"{r['algorithm']}{'' if 'n' not in frame else ' with ' + str(r['num_tasks']) + ' tasks'}: "
             f"{metric.show(r['train_classes'])} on fresh tasks of the training classes, "
             f"{metric.show(r['test_classes'])} on the test classes (gap {metric.gap(r['gap'])})"
             for _, r in frame.iterrows()]
    caption = ("Every run also scores its final model, with the same test procedure, on fresh tasks drawn from "
               "the training classes (their own random stream); the gap is that score minus the test score "
               "(for an error such as MSE a negative gap means worse on new classes). Means over finished runs.")
    return "; ".join(facts) + ".", caption


def section(exp: Experiment, out: Path) -> Section | None:
    return figure_section(exp, out, data(exp), "generalisation", "Generalisation to new classes", draw, prose)
