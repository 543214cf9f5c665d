"""Sensitivity to the two learning rates: one inner x outer grid per algorithm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from metacompare.report.draw import style
from metacompare.report.experiment import Experiment, Section
from metacompare.report.figures.common import figure_section
from metacompare.report.metric import num
from metacompare.report.select import best_row, describe, sweep_slice, why_unscored


def data(exp: Experiment) -> pd.DataFrame | None:
    """One row per algorithm and (inner_lr, outer_lr) cell that was run, with the other fields fixed."""
    if not {"inner_lr", "outer_lr"} <= set(exp.settings):
        return None
    frames = []
    for algorithm in exp.algorithms():
        rows, fixed = sweep_slice(exp, algorithm, ["inner_lr", "outer_lr"])
        if rows["inner_lr"].nunique() >= 2 and rows["outer_lr"].nunique() >= 2:
            frames.append(rows.assign(inner=rows["inner_lr"].map(num), outer=rows["outer_lr"].map(num),
                                      fixed=describe(fixed)))
    if not frames:
        return None
    frame = pd.concat(frames, ignore_index=True)
    frame["reason"] = [why_unscored(r) for _, r in frame.iterrows()]
    return frame


def draw(frame: pd.DataFrame, exp: Experiment) -> Figure:
    metric = exp.metric
    panels = list(frame.groupby("algorithm", sort=False))
    fig = style.figure(4.6 * len(panels) + 0.8, 4.4)
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)[0])
    finite = frame["score_mean"][np.isfinite(frame["score_mean"].to_numpy(float))]
    log = len(finite) and not metric.higher_is_better and finite.min() > 0 and finite.max() / finite.min() > 30
    vmin, vmax = (finite.min(), finite.max()) if len(finite) else (0, 1)
    norm = LogNorm(vmin, vmax) if log else Normalize(vmin, vmax)
    image = None
    for ax, (algorithm, rows) in zip(axes, panels):
        image = _panel(ax, rows, norm, "viridis" if metric.higher_is_better else "viridis_r", metric)
        fixed = rows["fixed"].iloc[0]
        ax.set_title(algorithm + (f"\n({fixed})" if fixed else ""), fontsize=10)
    fig.colorbar(image, ax=list(axes), label=f"test {metric.axis}", shrink=0.9)
    fig.suptitle(f"{exp.name}: sensitivity of test {metric.word} to the learning rates ({metric.direction})")
    return fig


def _panel(ax, rows: pd.DataFrame, norm, cmap: str, metric):
    inner, outer = sorted(rows["inner"].unique()), sorted(rows["outer"].unique())
    grid = np.full((len(outer), len(inner)), np.nan)
    for _, r in rows.iterrows():
        grid[outer.index(r["outer"]), inner.index(r["inner"])] = r["score_mean"]
    image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", cmap=cmap, norm=norm, aspect="auto")
    for _, r in rows.iterrows():
        _cell(ax, inner.index(r["inner"]), outer.index(r["outer"]), r, metric)
    ran = set(zip(rows["outer"], rows["inner"]))
    for i, o in enumerate(outer):
        for j, n in enumerate(inner):
            if (o, n) not in ran:
                ax.text(j, i, "not run", ha="center", va="center", fontsize=7, color="gray")
    ax.set_xticks(range(len(inner)), [f"{v:g}" for v in inner])
    ax.set_yticks(range(len(outer)), [f"{v:g}" for v in outer])
    ax.set_xlabel("inner learning rate (adaptation step size)")
    ax.set_ylabel("outer learning rate (meta step size)")
    return image


def _cell(ax, j: int, i: int, r: pd.Series, metric) -> None:
    if np.isfinite(r["score_mean"]):
        text = metric.number(r["score_mean"])
        if r["diverged"] or r["failed"]:
            text += f"\n({r['diverged'] + r['failed']}/{r['runs']} div)"
        ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white",
                bbox=dict(boxstyle="round,pad=0.15", fc="black", alpha=0.35, lw=0))
    else:
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="xx", ec=style.UNSCORED, lw=0))
        ax.text(j, i, r["reason"], ha="center", va="center", fontsize=8, color=style.UNSCORED, weight="bold",
                bbox=dict(fc="white", ec="none", alpha=0.8))


def prose(frame: pd.DataFrame, exp: Experiment) -> tuple[str, str]:
    metric = exp.metric
    facts = []
    for algorithm, rows in frame.groupby("algorithm", sort=False):
        best = best_row(rows, metric)
        unscored = int((~np.isfinite(rows["score_mean"].to_numpy(float))).sum())
        if best is not None:
            facts.append(f"{algorithm} is best at inner_lr={best['inner']:g}, outer_lr={best['outer']:g} "
                         f"({metric.show(best['score_mean'])}); {unscored} of {len(rows)} cells have no score")
    caption = ("Each cell: mean test score over seeds at that inner x outer learning rate; hatched red cells: "
               "no score, because every run diverged (non-finite training loss), failed, or ended with a NaN test "
               "score; '(k/n div)': k of n seeds diverged or failed, the score is over the others.")
    return "; ".join(facts) + ".", caption


def section(exp: Experiment, out: Path) -> Section | None:
    return figure_section(exp, out, data(exp), "sensitivity_heatmap", "Sensitivity: learning-rate grid", draw,
                          prose)
