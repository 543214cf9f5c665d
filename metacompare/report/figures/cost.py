"""Cost per algorithm: seconds per meta-iteration and peak memory, over runs doing the same work."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from metacompare.storage import results
from metacompare.report.draw import style
from metacompare.report.experiment import Experiment, Section
from metacompare.report.figures.common import colour, figure_section, is_baseline, sentence
from metacompare.report.select import headline

COST_FREE = ("num_tasks", "inner_lr", "outer_lr")  # change the numbers, not the work per meta-iteration
MEASURES = (("seconds_per_iteration", "seconds per meta-iteration"), ("peak_memory_mb", "peak memory (MB)"))


def data(exp: Experiment) -> pd.DataFrame | None:
    """Per algorithm: mean, 95% CI and band (never below 0) of cost over the runs that do the same work
    as its best setting."""
    rows = []
    for algorithm in exp.algorithms():
        runs = _same_work(exp, algorithm)
        row = {"algorithm": algorithm, "runs": len(runs)}
        for column, _ in MEASURES:
            mean, ci = results.mean_ci95([v for v in runs[column] if math.isfinite(v)])
            half = ci if math.isfinite(ci) else 0.0
            row |= {column: mean, f"{column}_ci95": ci, f"{column}_low": float(np.clip(mean - half, 0.0, None)),
                    f"{column}_high": mean + half}
        if math.isfinite(row["seconds_per_iteration"]) or math.isfinite(row["peak_memory_mb"]):
            rows.append(row)
    return pd.DataFrame(rows) if rows else None


def _same_work(exp: Experiment, algorithm: str) -> pd.DataFrame:
    head = headline(exp, algorithm)
    head = head if head is not None else exp.groups[exp.groups["algorithm"] == algorithm].iloc[0]
    runs = exp.runs[exp.runs["algorithm"] == algorithm]
    for name in exp.settings:
        if name not in COST_FREE:
            runs = runs[runs[name].astype(str) == str(head[name])]
    return runs


def draw(frame: pd.DataFrame, exp: Experiment) -> Figure:
    fig = style.figure(max(8, 1.6 * len(frame) + 3), 4)
    axes = fig.subplots(1, 2)
    names = list(frame["algorithm"])
    for ax, (column, label) in zip(axes, MEASURES):
        values = frame[column].to_numpy(float)
        errors = [values - frame[f"{column}_low"].to_numpy(float), frame[f"{column}_high"].to_numpy(float) - values]
        bars = ax.bar(range(len(frame)), values, yerr=errors, capsize=4, color=[colour(exp, a) for a in names],
                      edgecolor="black", lw=0.6)
        for bar, name, value, top in zip(bars, names, values, frame[f"{column}_high"]):
            bar.set_hatch(style.BASELINE_HATCH if is_baseline(name) else None)
            if math.isfinite(value):
                ax.annotate(f"{value:.3g}", (bar.get_x() + bar.get_width() / 2, top), ha="center", va="bottom",
                            fontsize=8, xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(range(len(frame)), names)
        style.pad_bars(ax, len(frame))
        ax.set_ylim(bottom=0.0)
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.grid(True, axis="y")
    if any(map(is_baseline, names)):
        fig.legend(handles=[Patch(fc="white", ec="black", label="meta-learner"),
                            Patch(fc="white", ec="black", hatch=style.BASELINE_HATCH, label="baseline")],
                   loc="outside lower center", ncols=2, fontsize=8)
    device = str(exp.runs["device"].iloc[0]) if "device" in exp.runs else "cpu"
    fig.suptitle(f"{exp.name}: cost per algorithm (mean over runs, error bars: 95% CI; device {device})")
    return fig


def prose(frame: pd.DataFrame, exp: Experiment) -> tuple[str, str]:
    speed = frame[frame["seconds_per_iteration"].map(math.isfinite)]
    memory = frame[frame["peak_memory_mb"].map(math.isfinite)]
    facts = []
    if len(speed) == 1:
        facts.append(f"{speed['algorithm'].iloc[0]} takes {speed['seconds_per_iteration'].iloc[0]:.3g} s per "
                     f"meta-iteration")
    elif len(speed):
        fast, slow = _extremes(speed, "seconds_per_iteration")
        facts.append(f"per meta-iteration, {fast['algorithm']} is fastest ({fast['seconds_per_iteration']:.3g} s) and "
                     f"{slow['algorithm']} slowest ({slow['seconds_per_iteration']:.3g} s, "
                     f"{slow['seconds_per_iteration'] / fast['seconds_per_iteration']:.1f}x as long)")
    if len(memory):
        low, high = _extremes(memory, "peak_memory_mb")
        facts.append(f"peak memory ranges from {low['peak_memory_mb']:.0f} MB ({low['algorithm']}) to "
                     f"{high['peak_memory_mb']:.0f} MB ({high['algorithm']})"
                     if round(high["peak_memory_mb"]) > round(low["peak_memory_mb"]) else
                     f"peak memory is {low['peak_memory_mb']:.0f} MB" + (" for each" if len(memory) > 1 else ""))
    counted = ", ".join(f"{r.algorithm} {r.runs}" for r in frame.itertuples())
    caption = (f"Each bar averages the algorithm's runs that do the same work per iteration as its best setting "
               f"(learning rates and task counts may differ; runs: {counted}). Seconds per meta-iteration count "
               "training steps only (no evaluation) and grow when other jobs share the CPU. Peak memory is the GPU's "
               "peak allocation on CUDA; on CPU it is the process's peak resident memory, which includes Python "
               "and PyTorch and, when one process ran several runs one after another, the earlier ones.")
    return sentence(facts), caption


def section(exp: Experiment, out: Path) -> Section | None:
    return figure_section(exp, out, data(exp), "cost", "Cost", draw, prose)


def _extremes(frame: pd.DataFrame, column: str) -> tuple[pd.Series, pd.Series]:
    """The rows with the lowest and the highest ``column``."""
    return frame.loc[frame[column].idxmin()], frame.loc[frame[column].idxmax()]
