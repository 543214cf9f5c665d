"""Test score against the number of adaptation steps at test time, as in Finn et al. (2017), Figure 3."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from metacompare.report.curves import scores_by_steps
from metacompare.report.draw import style
from metacompare.report.experiment import Experiment, Section
from metacompare.report.figures.common import colour, figure_section, is_baseline, with_band
from metacompare.report.metric import num
from metacompare.report.select import best_row, show_value


def panel_field(exp: Experiment) -> str | None:
    return next((f for f in ("shots", "ways") if f in exp.settings), None)


def data(exp: Experiment) -> pd.DataFrame | None:
    """One row per panel (shots or ways value), algorithm (best setting in that panel) and step count."""
    field = panel_field(exp)
    panels = sorted(exp.groups[field].map(num).unique()) if field else [None]
    rows = []
    for panel in panels:
        groups = exp.groups if panel is None else exp.groups[exp.groups[field].map(num) == panel]
        for algorithm in exp.algorithms():
            best = best_row(groups[groups["algorithm"] == algorithm], exp.metric)
            by_steps = scores_by_steps(exp, best["run_ids"]) if best is not None else {}
            if len(by_steps) >= 2:
                rows += [{"panel": panel, "algorithm": algorithm, "steps": s, "mean": m, "ci95": c}
                         for s, (m, c) in by_steps.items()]
    return with_band(pd.DataFrame(rows), exp.metric.upper) if rows else None


def draw(frame: pd.DataFrame, exp: Experiment) -> Figure:
    metric, field = exp.metric, panel_field(exp)
    panels = list(frame.groupby("panel", sort=False, dropna=False))
    fig = style.figure(4.2 * len(panels) + 1.5, 4.3)
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
    for ax, (panel, lines) in zip(axes, panels):
        for algorithm, line in lines.groupby("algorithm", sort=False):
            style.errorbar(ax, line, "steps", marker="o", color=colour(exp, algorithm), label=algorithm,
                           ls="--" if is_baseline(algorithm) else "-")
        style.bound_y(ax, frame["low"], frame["high"], metric)
        counts = sorted(set(lines["steps"]))
        if counts[0] > 0 and counts[-1] / counts[0] >= 10:
            style.log_x(ax)
        ax.set_xticks(counts, [str(c) for c in counts])
        ax.set_xlabel("adaptation steps at test time" + (" (log scale)" if ax.get_xscale() == "log" else ""))
        ax.grid(True)
        if field:
            ax.set_title(f"{field}={show_value(field, panel)}", fontsize=10)
    axes[0].set_ylabel(f"test {metric.axis}")
    axes[-1].legend(fontsize=8, title="algorithm (best setting); bars: 95% CI", title_fontsize=8)
    fig.suptitle(f"{exp.name}: test {metric.word} vs adaptation steps ({metric.direction})")
    return fig


def prose(frame: pd.DataFrame, exp: Experiment) -> tuple[str, str]:
    metric, field = exp.metric, panel_field(exp)
    facts = []
    for panel, lines in frame.groupby("panel", sort=False, dropna=False):
        most = lines["steps"].max()
        at_most = lines[lines["steps"] == most]
        winner = at_most.loc[at_most["mean"].map(metric.goodness).idxmax()]
        own = lines[lines["algorithm"] == winner["algorithm"]].sort_values("steps")
        where = f"{field}={show_value(field, panel)}: " if field else ""
        facts.append(f"{where}after {most} steps {winner['algorithm']} is best ({metric.show(winner['mean'])}, "
                     f"from {metric.show(own['mean'].iloc[0])} after {own['steps'].iloc[0]})")
    caption = ("Each algorithm at its best setting" + (f" for each {field}" if field else "")
               + ", scored on the same test episodes after each number of adaptation steps in "
               "`test_inner_steps` (dashed: baselines). Error bars: 95% CI across seeds, or over test "
               "episodes with one seed. Finn et al. (2017), Figure 3, plots the same quantity for sine regression.")
    return "; ".join(facts) + ".", caption


def section(exp: Experiment, out: Path) -> Section | None:
    return figure_section(exp, out, data(exp), "adaptation_steps", "Adaptation steps at test time", draw, prose)
