"""Confidence intervals: Student-t for few seeds, so two seeds do not look like a tight estimate."""

from __future__ import annotations

import math

import pytest

from metacompare.storage.results import mean_ci95, t_critical


def test_ci_uses_student_t_quantiles():
    mean, ci = mean_ci95([1.0, 3.0])  # std 1.414, 1 degree of freedom
    assert mean == 2.0
    assert ci == pytest.approx(12.706 * math.sqrt(2) / math.sqrt(2), abs=1e-3)
    assert t_critical(3) == pytest.approx(4.303, abs=5e-4) and t_critical(31) == pytest.approx(2.042, abs=5e-4)
    assert t_critical(401) == pytest.approx(1.966, abs=0.002)  # 400 df: t(0.975) = 1.9659


def test_ci_of_one_value_is_undefined_and_of_none_is_nan():
    mean, ci = mean_ci95([4.0])
    assert mean == 4.0 and math.isnan(ci) and math.isnan(t_critical(1))
    assert all(math.isnan(v) for v in mean_ci95([]))
