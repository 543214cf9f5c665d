"""The generalisation figure's data step, against hand-computed numbers."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from metacompare.report.figures import generalisation
from metacompare.report.metric import Metric

ACCURACY = Metric("test accuracy", "accuracy (%)", "test_accuracy", "val_accuracy", 100.0, True, ".2f", 100.0)


def experiment(rows, settings):
    return SimpleNamespace(runs=pd.DataFrame(rows), settings=settings, metric=ACCURACY)


def test_gap_per_algorithm_is_train_class_minus_test_score_in_points():
    rows = [dict(algorithm="maml", status="finished", test_accuracy_mean=0.50, train_tasks_accuracy_mean=0.90),
            dict(algorithm="maml", status="finished", test_accuracy_mean=0.60, train_tasks_accuracy_mean=0.80),
            dict(algorithm="reptile", status="failed", test_accuracy_mean=float("nan"), train_tasks_accuracy_mean=float("nan")),
            dict(algorithm="reptile", status="finished", test_accuracy_mean=0.40, train_tasks_accuracy_mean=0.45)]
    frame = generalisation.data(experiment(rows, []))
    maml = frame[frame["algorithm"] == "maml"].iloc[0]
    assert maml["train_classes"] == pytest.approx(85.0) and maml["test_classes"] == pytest.approx(55.0)
    assert maml["gap"] == pytest.approx(30.0) and maml["runs"] == 2
    reptile = frame[frame["algorithm"] == "reptile"].iloc[0]
    assert reptile["gap"] == pytest.approx(5.0) and reptile["runs"] == 1  # the failed run is left out


def test_gap_per_task_count_puts_unlimited_rightmost():
    rows = [dict(algorithm="maml", status="finished", num_tasks=n, test_accuracy_mean=t, train_tasks_accuracy_mean=s)
            for n, t, s in ((10, 0.3, 0.9), (100, 0.5, 0.8), (-1, 0.6, 0.7))]
    frame = generalisation.data(experiment(rows, ["num_tasks"]))
    assert list(frame["gap"].round(6)) == [60.0, 30.0, 10.0]
    assert list(frame["position"]) == [10, 100, 1000]


def test_no_train_class_scores_means_no_figure():
    rows = [dict(algorithm="maml", status="finished", test_accuracy_mean=0.5)]
    assert generalisation.data(experiment(rows, [])) is None


def test_the_figure_is_in_a_real_report(tmp_path):
    """The seed digits results carry train-class scores: the report draws the figure."""
    import shutil

    from metacompare.report import write_report

    source = Path(__file__).resolve().parents[1] / "results" / "seed_digits"
    shutil.copytree(source, tmp_path / "seed_digits", ignore=shutil.ignore_patterns("report", "events.*"))
    write_report(tmp_path / "seed_digits")
    assert (tmp_path / "seed_digits" / "report" / "generalisation.png").is_file()
    assert "Generalisation to new classes" in (tmp_path / "seed_digits" / "report" / "report.md").read_text()
