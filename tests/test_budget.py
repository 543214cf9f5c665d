"""Budgets: work stops a run at the iteration the counting rule predicts; seconds stop it; validation
time is not counted against the budget."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from metacompare.training import budget, runner
from metacompare.config.loading import ConfigError, RunConfig, validate, with_overrides
from metacompare.errors import UserError
from metacompare.training.runner import train_and_evaluate
from tests.test_tune import one_thread  # noqa: F401 (autouse fixture: one torch thread)


def tiny(tmp_path, **changes) -> RunConfig:
    """Sine, 5 support and 10 query points, meta-batch 2: small enough to run in a second."""
    base = RunConfig(experiment="budget", algorithm="fomaml", dataset="sine", model="mlp", shots=5, query=10,
                     inner_steps=1, meta_batch_size=2, iterations=1000, eval_interval=1000, eval_episodes=2,
                     test_episodes=2, eval_inner_steps=1, checkpoint_interval=1000, results_dir=str(tmp_path))
    return with_overrides(validate(base), **changes)


@pytest.mark.parametrize("algorithm, per_task", [
    ("fomaml", 3 * 5 + 3 * 10),           # one inner step on 5 support points, then 10 query points
    ("maml", 3 * 5 + 6 * 5 + 3 * 10),     # + differentiating that step's forward and backward (2 x 3 per point)
    ("reptile", 3 * 15 * 5),              # 5 inner steps on all 15 points, no query pass
])
def test_task_work_follows_the_counting_rule(tmp_path, algorithm, per_task):
    cfg = tiny(tmp_path, algorithm=algorithm, inner_steps=5 if algorithm == "reptile" else 1)
    assert budget.task_work(type_rule(algorithm), cfg, second_order=algorithm == "maml") == per_task


def type_rule(algorithm: str) -> str:
    from metacompare.algorithms import ALGORITHMS

    return ALGORITHMS[algorithm].work_rule


def test_mini_batches_count_the_examples_each_step_sees(tmp_path):
    cfg = tiny(tmp_path, algorithm="reptile", inner_steps=4, inner_batch_size=6)
    assert budget.task_work("adapt_all", cfg, False) == 3 * 6 * 4


@pytest.mark.parametrize("algorithm, per_iteration", [("fomaml", 90), ("maml", 150)])
def test_a_work_budget_stops_at_the_predicted_iteration(tmp_path, algorithm, per_iteration):
    # 1000 example-passes at 90 (fomaml) or 150 (maml) per iteration: 11 and 6 whole iterations fit.
    cfg = tiny(tmp_path, algorithm=algorithm, budget={"work": 1000})
    summary = train_and_evaluate(cfg, progress=False)
    expected = 1000 // per_iteration
    assert summary["iterations_done"] == expected
    assert summary["work"] == expected * per_iteration <= 1000
    metrics = pd.read_csv(tmp_path / "budget" / cfg.run_id() / "metrics.csv")
    assert metrics["iteration"].tolist() == [expected]  # the end of a budget is always validated
    assert metrics["work"].tolist() == [expected * per_iteration]


def test_a_seconds_budget_stops_the_run(tmp_path):
    cfg = tiny(tmp_path, budget={"seconds": 0.3}, iterations=100_000)
    began = time.perf_counter()
    summary = train_and_evaluate(cfg, progress=False)
    assert 0 < summary["iterations_done"] < 100_000
    assert 0.3 <= summary["train_seconds"] < 0.3 + 2.0  # it stops after the iteration that crossed it
    assert time.perf_counter() - began < 30


def test_a_cpu_seconds_budget_does_not_count_time_spent_waiting(tmp_path, monkeypatch):
    """Each iteration also sleeps 0.1 s (as a run waits for a core on a shared machine): the wall clock
    counts it, this process's CPU time does not, and only CPU time spends a ``cpu_seconds`` budget."""
    from metacompare.algorithms.base import MetaAlgorithm

    real = MetaAlgorithm.meta_train_step

    def waiting(self, batch):
        time.sleep(0.1)
        return real(self, batch)

    monkeypatch.setattr(MetaAlgorithm, "meta_train_step", waiting)
    cfg = tiny(tmp_path, budget={"cpu_seconds": 0.3}, iterations=100_000)
    summary = train_and_evaluate(cfg, progress=False)
    done = summary["iterations_done"]
    assert 0.3 <= summary["train_cpu_seconds"] < 0.3 + 2.0
    assert summary["train_seconds"] >= summary["train_cpu_seconds"] + 0.1 * done * 0.9
    assert done >= 2
    with pytest.raises(ConfigError, match="budget.cpu_seconds"):
        tiny(tmp_path, budget={"cpu_seconds": 10}, device="cuda")
    assert budget.parse_budget("cpu:300") == {"cpu_seconds": 300.0}
    assert budget.label({"cpu_seconds": 300.0}) == "cpu300s"


def test_validation_time_is_not_counted(tmp_path, monkeypatch):
    """A validation that sleeps 0.3 s exhausts a 0.3 s budget at the first evaluation if it counts; it
    is timed apart instead, so training goes on past it. (A validation every 10 iterations: the sleeps
    dominate the test's time, and the budget takes some hundred iterations of this tiny model.)"""
    real = runner.evaluate
    pause = 0.3

    def slow(*args, **kwargs):
        time.sleep(pause)
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "evaluate", slow)
    cfg = tiny(tmp_path, budget={"seconds": pause}, iterations=100_000, eval_interval=10)
    summary = train_and_evaluate(cfg, progress=False)
    metrics = pd.read_csv(tmp_path / "budget" / cfg.run_id() / "metrics.csv")
    first = metrics.iloc[0]
    assert first["train_seconds"] < pause <= first["train_seconds"] + first["validation_seconds"]
    assert len(metrics) >= 2 and summary["iterations_done"] == metrics["iteration"].iloc[-1] > 10
    assert (metrics["validation_seconds"].diff().fillna(metrics["validation_seconds"]) >= pause).all()
    assert pause <= summary["train_seconds"] < metrics["train_seconds"].iloc[-2] + pause + 1.0


@pytest.mark.parametrize("algorithm, batch_tasks", [("fomaml", False), ("maml", True), ("reptile", False),
                                                   ("reptile", True)])
def test_the_logged_training_fit_is_not_charged(tmp_path, monkeypatch, algorithm, batch_tasks):
    """Measuring the logged training fit burns 20 ms of CPU per measurement here: charged, a 0.3 s CPU
    budget would end within 8 iterations (2 measurements each, looped); it is timed apart instead, in
    ``logging_seconds``, on every engine."""
    from metacompare.algorithms.base import MetaAlgorithm

    real = MetaAlgorithm.logging_fit

    def costly(self):
        context = real(self)

        class Burning:
            def __enter__(self):
                context.__enter__()
                ends = time.process_time() + 0.02
                while time.process_time() < ends:
                    pass

            def __exit__(self, *exc):
                return context.__exit__(*exc)
        return Burning()

    monkeypatch.setattr(MetaAlgorithm, "logging_fit", costly)
    cfg = tiny(tmp_path, algorithm=algorithm, batch_tasks=batch_tasks, budget={"cpu_seconds": 0.3},
               iterations=100_000)
    summary = train_and_evaluate(cfg, progress=False)
    measurements = summary["iterations_done"] * (1 if batch_tasks else cfg.meta_batch_size)
    assert summary["iterations_done"] > 15
    assert summary["logging_seconds"] >= 0.02 * measurements * 0.9
    assert 0.3 <= summary["train_cpu_seconds"] < 0.3 + 0.5
    metrics = pd.read_csv(tmp_path / "budget" / cfg.run_id() / "metrics.csv")
    assert metrics["logging_seconds"].iloc[-1] == pytest.approx(summary["logging_seconds"])


def test_evaluations_are_spread_over_the_budget(tmp_path):
    # 1000 / 90 -> 11 iterations; 4 evaluations at the first iteration past each quarter: 3, 6, 9, 11.
    cfg = tiny(tmp_path, budget={"work": 1000, "evaluations": 4})
    train_and_evaluate(cfg, progress=False)
    metrics = pd.read_csv(tmp_path / "budget" / cfg.run_id() / "metrics.csv")
    assert metrics["iteration"].tolist() == [3, 6, 9, 11]


def test_outer_lr_anneals_over_the_work_budget(tmp_path):
    cfg = tiny(tmp_path, budget={"work": 900})  # 10 iterations planned
    meter = budget.BudgetMeter(cfg, 90, {})
    assert meter.planned == 10
    assert [meter.fraction(i) for i in (0, 5, 10)] == [0.0, 0.5, 1.0]


def test_no_budget_keeps_the_run_id_and_bad_budgets_are_refused(tmp_path):
    cfg = tiny(tmp_path)
    assert cfg.run_id() == tiny(tmp_path, budget={"seconds": None, "work": None}).run_id()
    assert cfg.run_id() != tiny(tmp_path, budget={"work": 1000}).run_id()
    with pytest.raises(ConfigError, match="budget.work"):
        tiny(tmp_path, budget={"work": -1})
    assert budget.parse_budget("300") == {"seconds": 300.0}
    assert budget.parse_budget("45s") == {"seconds": 45.0}
    assert budget.parse_budget("work:2e6") == {"work": 2e6}
    with pytest.raises(UserError, match="--budget"):
        budget.parse_budget("flops:3")


class Reporting:
    """An algorithm that reports 0.5 wall and 0.25 CPU seconds of measuring its logged fit."""

    work_rule = "adapt_then_query"

    def take_logging_seconds(self):
        return 0.5, 0.25


def test_an_iteration_is_charged_its_seconds_less_the_reported_logging_and_its_work(tmp_path):
    meter = budget.BudgetMeter(tiny(tmp_path), 90, {})
    now, now_cpu = budget.clock()
    stepped = time.perf_counter() - 1.0
    step_seconds = meter.charge((now - 3.0, now_cpu - 2.0), stepped, Reporting())
    counts = meter.row()
    assert counts["train_seconds"] == pytest.approx(2.5, abs=0.05)
    assert counts["train_cpu_seconds"] == pytest.approx(1.75, abs=0.05)
    assert counts["logging_seconds"] == 0.5 and counts["work"] == 90 and counts["validation_seconds"] == 0
    assert step_seconds == pytest.approx(0.5, abs=0.05)


def test_iteration_work_reads_the_algorithm_s_declarations(tmp_path):
    cfg = tiny(tmp_path)  # meta-batch 2, one inner step on 5 support points, 10 query points
    second = Reporting()
    first = Reporting()
    first.first_order = True
    assert budget.iteration_work(second, cfg) == 2 * (3 * 5 + 6 * 5 + 3 * 10)
    assert budget.iteration_work(first, cfg) == 2 * (3 * 5 + 3 * 10)
