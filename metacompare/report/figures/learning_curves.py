"""Validation score during meta-training, one line per algorithm at its best setting."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from metacompare.report.curves import learning_curve
from metacompare.report.draw import style
from metacompare.report.experiment import Experiment, Section
from metacompare.report.figures.common import colour, figure_section, is_baseline, published_value, with_band
from metacompare.report.published import reference_note
from metacompare.report.select import headlines, label_of, run_ids


def data(exp: Experiment) -> pd.DataFrame | None:
    """One row per algorithm and evaluation point: mean, CI and its band clipped to the score's range."""
    frames = []
    for row in headlines(exp):
        curve = learning_curve(exp, run_ids(row))
        if curve is not None:
            frames.append(curve.assign(algorithm=row["algorithm"], label=label_of(exp, row), seeds=int(row["seeds"]),
                                       published=published_value(row)))
    if not frames:
        return None
    return with_band(pd.concat(frames, ignore_index=True), exp.metric.upper)


def draw(frame: pd.DataFrame, exp: Experiment) -> Figure:
    metric = exp.metric
    fig = style.figure(11, 4.2)
    axes = fig.subplots(1, 2, sharey=True)
    for algorithm, curve in frame.groupby("algorithm", sort=False):
        color, line = colour(exp, algorithm), "--" if is_baseline(algorithm) else "-"
        band = "across seeds" if curve["seeds"].iloc[0] > 1 else "over validation episodes"
        for ax, x in zip(axes, ("iteration", "wall_time_s")):
            ax.plot(curve[x], curve["mean"], line, marker="o", ms=3, color=color,
                    label=f"{curve['label'].iloc[0]}, 95% CI {band}")
            ax.fill_between(curve[x], curve["low"], curve["high"], color=color, alpha=0.08, lw=0.8, ls=line,
                            edgecolor=color)
            if pd.notna(curve["published"].iloc[0]):
                ax.axhline(curve["published"].iloc[0], color=color, ls=":", lw=1.2)
    for ax in axes:
        style.bound_y(ax, [*frame["low"], *frame["published"]], [*frame["high"], *frame["published"]], metric)
        ax.grid(True)
    axes[0].set_xlabel("meta-iteration (outer update)")
    axes[1].set_xlabel("wall-clock time of training + validation (s)")
    axes[0].set_ylabel(f"validation {metric.axis}")
    if frame["published"].notna().any():
        axes[0].plot([], [], ":", color="black", label="published test accuracy, full benchmark (source in caption)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8)
    fig.suptitle(f"{exp.name}: validation {metric.word} during meta-training ({metric.direction})")
    return fig


def prose(frame: pd.DataFrame, exp: Experiment) -> tuple[str, str]:
    metric = exp.metric
    finals = frame.groupby("algorithm", sort=False).tail(1)
    best = finals.loc[finals["mean"].map(metric.goodness).idxmax()]
    text = (f"At the last evaluation, {best['label']} has the best validation {metric.word} "
            f"({metric.show(best['mean'])}, after {best['wall_time_s']:.0f} s)")
    if len(finals) > 1:
        worst = finals.loc[finals["mean"].map(metric.goodness).idxmin()]
        text += f"; {worst['label']} the worst ({metric.show(worst['mean'])})"
    drawn = [r for r in headlines(exp) if r["algorithm"] in set(frame["algorithm"])]
    caption = ("One line per algorithm at its best setting; shaded: 95% CI across seeds, or over the "
               "validation episodes when the setting has one seed (clipped to the score's range). Left: against "
               "meta-iterations; right: against wall-clock seconds. The training loss and accuracy in metrics.csv "
               "mean the same for every algorithm: the adapted weights' loss on the examples they were adapted "
               "on, averaged over the meta-batch (metacompare.engines.rules.logged_fit)." + reference_note(drawn))
    return text + ".", caption


def section(exp: Experiment, out: Path) -> Section | None:
    return figure_section(exp, out, data(exp), "learning_curves", "Learning curves", draw, prose)
