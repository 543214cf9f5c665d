"""Helpers every figure module shares: bands in the score's range, reference marks, the section shape."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd
from matplotlib.figure import Figure

from metacompare.report.draw import style
from metacompare.report.experiment import BASELINES, Experiment, Section
from metacompare.report.published import published
from metacompare.report.stats import band


def with_band(frame: pd.DataFrame, upper: float, mean: str = "mean", ci: str = "ci95") -> pd.DataFrame:
    """Add ``low``/``high``: mean ± CI clipped to [0, upper] (no band where the CI is undefined)."""
    low, high = band(frame[mean].astype(float), frame[ci].astype(float), upper)
    return frame.assign(low=low, high=high)


def published_value(row: pd.Series) -> float:
    mark = published(row)
    return mark[0] if mark is not None else float("nan")


def is_baseline(algorithm: str) -> bool:
    return algorithm in BASELINES


def colour(exp: Experiment, algorithm: str) -> str:
    return style.color(exp.algorithms(), algorithm)


def figure_section(exp: Experiment, out: Path, frame: pd.DataFrame | None, stem: str, title: str,
                   draw: Callable[[pd.DataFrame, Experiment], Figure],
                   prose: Callable[[pd.DataFrame, Experiment], tuple[str, str]]) -> Section | None:
    """Draw ``frame`` (the figure's data step) into ``<out>/<stem>.png/.svg`` and say what it shows."""
    if frame is None or frame.empty:
        return None
    style.save(draw(frame, exp), out, stem)
    sentence, caption = prose(frame, exp)
    return Section(title, sentence, caption, figure=stem)


def sentence(facts: list[str]) -> str:
    text = "; ".join(facts)
    return text[:1].upper() + text[1:] + "." if text else ""
