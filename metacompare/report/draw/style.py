"""The one matplotlib look of metacompare's figures (report and bench): colours, fonts, saving, axes.

Every figure is built inside :func:`styled` on a bare ``matplotlib.figure.Figure`` (no pyplot state,
so figures are safe in worker processes and tests) and saved by :func:`save`.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Iterator, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from metacompare.report.metric import Metric

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#7f7f7f", "#bcbd22", "#17becf", "#e377c2",
           "#d62728"]
LIBRARY_COLORS = {"metacompare": PALETTE[0], "learn2learn": PALETTE[1], "higher": PALETTE[2], "naive": PALETTE[5]}
UNSCORED = "#c0392b"       # the red of "no score" marks
BASELINE_HATCH = "//"
RC = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 8, "xtick.labelsize": 9,
      "ytick.labelsize": 9, "grid.alpha": 0.3, "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
      "savefig.bbox": "tight", "svg.hashsalt": "metacompare"}
DPI = 130


@contextlib.contextmanager
def styled() -> Iterator[None]:
    """Build and save figures with the shared rc settings."""
    with matplotlib.rc_context(RC):
        yield


def color(algorithms: Sequence[str], algorithm: str) -> str:
    """An algorithm's colour: its place in the report's algorithm order picks from the palette."""
    return PALETTE[list(algorithms).index(algorithm) % len(PALETTE)]


def figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


# No date and no version in the files (ids come from RC's fixed svg.hashsalt), so drawing the same
# data again writes the same bytes: a rerun that changes nothing leaves a committed figure untouched.
METADATA = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None}}


def save(fig: Figure, out: Path, stem: str, dpi: int = DPI, svg: bool = True) -> str:
    """Write ``<stem>.png`` (and ``<stem>.svg``) into ``out``, byte for byte the same for the same
    figure; return the stem."""
    with matplotlib.rc_context({"svg.hashsalt": RC["svg.hashsalt"]}):  # also when drawn outside styled()
        fig.savefig(Path(out) / f"{stem}.png", dpi=dpi, metadata=METADATA["png"])
        if svg:
            fig.savefig(Path(out) / f"{stem}.svg", metadata=METADATA["svg"])
    return stem


def y_limits(lows: Sequence[float], highs: Sequence[float], metric: Metric) -> tuple[float, float] | None:
    """Axis limits that show every band end, padded by 5% of the span and kept within [0, upper]."""
    lows = [v for v in lows if math.isfinite(v)]
    highs = [v for v in highs if math.isfinite(v)]
    if not lows or not highs:
        return None
    low, high = min(lows), max(highs)
    pad = 0.05 * (high - low) if high > low else max(abs(high) * 0.05, 1e-3)
    return max(0.0, low - pad), min(metric.upper, high + pad)


def bound_y(ax, lows: Sequence[float], highs: Sequence[float], metric: Metric) -> None:
    """A log axis for MSE spanning orders of magnitude; otherwise linear limits from :func:`y_limits`."""
    positive = np.asarray([v for v in lows if math.isfinite(v) and v > 0])
    top = max([v for v in highs if math.isfinite(v)], default=math.nan)
    if not metric.higher_is_better and positive.size and top / positive.min() > 30:
        ax.set_yscale("log")
        return
    limits = y_limits(lows, highs, metric)
    if limits is not None:
        ax.set_ylim(*limits)


def log_x(ax) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())


def pad_bars(ax, n: int) -> None:
    """Keep one or two bars from filling the whole plot."""
    pad = max(0.75, (3 - n) / 2 + 0.5)
    ax.set_xlim(-pad, n - 1 + pad)


def dodge(k: int, n: int) -> float:
    """A small multiplicative shift on a log axis, so that error bars of several lines do not overlap."""
    return 10 ** (0.015 * (k - (n - 1) / 2))


def errorbar(ax, frame, x: str, **style) -> None:
    """Points of ``frame`` (columns mean, low, high) with asymmetric, already clipped error bars."""
    y = frame["mean"].to_numpy(float)
    yerr = np.vstack([y - frame["low"].to_numpy(float), frame["high"].to_numpy(float) - y])
    ax.errorbar(frame[x].to_numpy(float), y, yerr=yerr, capsize=3, **style)


def mark_unscored(ax, x: Sequence[float], reasons: Sequence[str], color_: str) -> None:
    """Settings without a score: a cross near the bottom of the axes, labelled with why."""
    transform = ax.get_xaxis_transform()
    ax.plot(list(x), [0.04] * len(x), "X", ms=10, color=color_, mec=UNSCORED, transform=transform)
    for xi, reason in zip(x, reasons):
        ax.annotate(reason, (xi, 0.04), xycoords=transform, xytext=(0, 9), textcoords="offset points",
                    ha="center", fontsize=7, color=UNSCORED)


def unscored_legend(ax) -> None:
    ax.plot([], [], "X", ms=10, color="gray", mec=UNSCORED, label="no score (diverged, failed or NaN)")
