"""Test score against the number of distinct meta-training tasks (∞: a fresh task every draw)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from metacompare.report.draw import style
from metacompare.report.experiment import Experiment, Section
from metacompare.report.figures.common import colour, figure_section, published_value, with_band
from metacompare.report.metric import num
from metacompare.report.published import reference_note
from metacompare.report.select import describe, show_value, sweep_slice, why_unscored


def data(exp: Experiment) -> pd.DataFrame | None:
    """One row per algorithm and task count (other swept fields fixed, named in ``fixed``).

    ``position`` is where the count sits on the log axis: the count itself, or ten times the largest
    finite count for ``num_tasks: -1`` (unlimited).
    """
    if "num_tasks" not in exp.settings:
        return None
    frames = []
    for algorithm in exp.algorithms():
        rows, fixed = sweep_slice(exp, algorithm, ["num_tasks"])
        if rows["num_tasks"].nunique() >= 2:
            frames.append(rows.assign(n=rows["num_tasks"].map(num), fixed=describe(fixed)).sort_values("n"))
    if not frames:
        return None
    frame = pd.concat(frames, ignore_index=True)
    finite = frame.loc[frame["n"] > 0, "n"]
    infinity = finite.max() * 10 if len(finite) else 10.0
    frame["position"] = frame["n"].where(frame["n"] != -1, infinity)
    frame["scored"] = np.isfinite(frame["score_mean"].to_numpy(float))
    frame["reason"] = [why_unscored(r) for _, r in frame.iterrows()]
    frame["published"] = [published_value(r) for _, r in frame.iterrows()]
    return with_band(frame.rename(columns={"score_mean": "mean", "score_ci95": "ci95"}), exp.metric.upper)


def draw(frame: pd.DataFrame, exp: Experiment) -> Figure:
    metric = exp.metric
    fig = style.figure(7, 4.5)
    ax = fig.subplots()
    series = list(frame.groupby("algorithm", sort=False))
    infinity = frame.loc[frame["n"] == -1, "position"].max() if (frame["n"] == -1).any() else None
    for k, (algorithm, rows) in enumerate(series):
        _draw_series(ax, rows, colour(exp, algorithm), style.dodge(k, len(series)), infinity)
    style.log_x(ax)
    finite = sorted(set(frame.loc[frame["n"] > 0, "n"]))
    ticks = [*finite, infinity] if infinity is not None else finite
    ax.set_xticks(ticks, [f"{int(t)}" for t in finite] + (["∞\n(fresh task\neach draw)"] if infinity else []))
    scored = frame[frame["scored"]]
    style.bound_y(ax, [*scored["low"], *frame["published"]], [*scored["high"], *frame["published"]], metric)
    ax.set_xlabel("number of distinct meta-training tasks (log scale)")
    ax.set_ylabel(f"test {metric.axis}")
    ax.grid(True)
    if frame["published"].notna().any():
        ax.plot([], [], "*", color="gray", mec="black", ms=11, label="published, full benchmark (source in caption)")
    if not frame["scored"].all():
        style.unscored_legend(ax)
    ax.legend(title="algorithm (error bars: 95% CI)", fontsize=8)
    ax.set_title(f"{exp.name}: test {metric.word} vs number of training tasks")
    return fig


def _draw_series(ax, rows: pd.DataFrame, color: str, shift: float, infinity: float | None) -> None:
    lost = rows[~rows["scored"]]
    if len(lost):
        style.mark_unscored(ax, lost["position"], lost["reason"], color)
    rows = rows[rows["scored"]].assign(x=lambda r: r["position"] * shift)
    finite, unlimited = rows[rows["n"] > 0], rows[rows["n"] == -1]
    style.errorbar(ax, finite, "x", marker="o", color=color, label=rows["algorithm"].iloc[0] if len(rows) else None)
    if len(unlimited):
        style.errorbar(ax, unlimited, "x", marker="s", color=color, ls="none")
        if len(finite):
            ax.plot([finite["x"].iloc[-1], infinity * shift], [finite["mean"].iloc[-1], unlimited["mean"].iloc[0]],
                    ":", color=color)
    marks = rows["published"].dropna()
    if len(marks) and infinity is not None:
        ax.plot([infinity], [marks.iloc[0]], marker="*", ms=11, color=color, mec="black", ls="none")


def prose(frame: pd.DataFrame, exp: Experiment) -> tuple[str, str]:
    metric = exp.metric
    facts = [_fact(algorithm, rows.sort_values("position"), metric)
             for algorithm, rows in frame.groupby("algorithm", sort=False)]
    fewest = frame.loc[frame["n"] > 0, "n"].min()
    at_fewest = frame[(frame["n"] == fewest) & frame["scored"]]
    leader = ""
    if len(at_fewest) > 1:
        best = at_fewest.loc[at_fewest["mean"].map(metric.goodness).idxmax()]
        leader = f" With the fewest tasks ({int(fewest)}), {best['algorithm']} is best."
    fixed = "; ".join(f"{a}: {f}" for a, f in frame.groupby("algorithm", sort=False)["fixed"].first().items() if f)
    firsts = [r for _, r in frame.groupby("algorithm", sort=False).head(1).iterrows()]
    caption = ("Test score per number of distinct training tasks; ∞ (right end) means a fresh task for every "
               "draw. Error bars: 95% CI (across seeds, or over test episodes with one seed)."
               + (f" Other swept fields fixed at: {fixed}." if fixed else "") + reference_note(firsts))
    return "; ".join(facts) + "." + leader, caption


def _fact(algorithm: str, rows: pd.DataFrame, metric) -> str:
    scored = rows[rows["scored"]]
    lost = ", ".join(show_value("num_tasks", n) for n in rows.loc[~rows["scored"], "num_tasks"])
    count = lambda r: show_value("num_tasks", r["num_tasks"])  # noqa: E731
    if len(scored) >= 2:
        first, last = scored.iloc[0], scored.iloc[-1]
        fact = (f"{algorithm} goes from {metric.show(first['mean'])} with {count(first)} to "
                f"{metric.show(last['mean'])} with {count(last)} tasks")
    elif len(scored) == 1:
        fact = f"{algorithm} scores {metric.show(scored['mean'].iloc[0])} with {count(scored.iloc[0])} tasks"
    else:
        fact = f"{algorithm} has no score"
    return fact + (f" (no score with {lost} tasks)" if lost else "")


def section(exp: Experiment, out: Path) -> Section | None:
    return figure_section(exp, out, data(exp), "task_counts", "Number of training tasks", draw, prose)
