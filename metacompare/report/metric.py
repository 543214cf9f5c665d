"""Which score a report compares, how it is shown, and the range it can take."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from metacompare.data.source import classifies


@dataclass(frozen=True)
class Metric:
    """Which score a report uses and how to show it."""

    name: str             # in sentences: "test accuracy"
    axis: str             # axis label
    column: str           # runs.csv prefix: <column>_mean, <column>_ci95
    val_column: str       # metrics.csv prefix
    scale: float          # accuracy is stored as a fraction, shown in %
    higher_is_better: bool
    fmt: str
    upper: float          # the largest value the score can take (100% for accuracy); the smallest is 0

    def number(self, value: float) -> str:
        if not math.isfinite(value):
            return "n/a"
        return format(value, ".3g" if abs(value) >= 1e4 else self.fmt)

    def show(self, value: float) -> str:
        """With its unit, for sentences: "92.00%"."""
        return self.number(value) + ("%" if self.is_accuracy and math.isfinite(value) else "")

    def gap(self, value: float) -> str:
        """A difference of two scores: "4.00 points" for accuracy."""
        return self.number(value) + (" points" if self.is_accuracy else "")

    @property
    def is_accuracy(self) -> bool:
        return self.column == "test_accuracy"

    @property
    def word(self) -> str:
        """The score's name without its unit: "accuracy", "mean-squared error"."""
        return self.axis.split(" (")[0]

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"

    def goodness(self, value: float) -> float:
        """Larger is better, whichever the score: for max() and min()."""
        return value if self.higher_is_better else -value

    def better(self, a: float, b: float) -> bool:
        return a > b if self.higher_is_better else a < b

    def clip(self, values):
        """Keep values (a float, array or Series) within the score's range [0, upper]."""
        return np.clip(values, 0.0, self.upper)


ACCURACY = Metric("test accuracy", "accuracy (%)", "test_accuracy", "val_accuracy", 100.0, True, ".2f", 100.0)
MSE = Metric("test MSE", "mean-squared error", "test_loss", "val_loss", 1.0, False, ".3f", math.inf)


def num(value: Any) -> float:
    """A config or CSV value as a float; NaN when it is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def choose_metric(runs: pd.DataFrame) -> Metric:
    """Regression (sine) is scored by test MSE (lower is better), classification by test accuracy."""
    return ACCURACY if any(classifies(d) for d in set(runs["dataset"].astype(str))) else MSE
