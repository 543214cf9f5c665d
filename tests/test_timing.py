"""Time to the answer (metacompare.training.timing): the wall-time split of a run, the plan and the progress line."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from metacompare.training import timing
from metacompare.config.loading import expand
from metacompare.training.runner import run_dir, train_and_evaluate
from tests.test_tune import TINY, one_thread  # noqa: F401 (autouse fixture)


def test_split_adds_up_to_the_wall_time_with_waiting_the_rest():
    parts = timing.split(100.0, {"train_seconds": 60.0, "validation_seconds": 10.0, "logging_seconds": 5.0},
                         {"floor": 4.0, "test": 8.0, "train_tasks": 3.0})
    assert list(parts) == list(timing.PHASES)
    assert parts["waiting"] == pytest.approx(10.0) and sum(parts.values()) == pytest.approx(100.0)
    # never negative: a data-parallel run's training seconds are its slowest process's
    assert timing.split(50.0, {"train_seconds": 60.0}, {})["waiting"] == 0.0


def test_phase_clock_adds_to_what_a_resumed_run_had():
    state = {"phases": {"floor": 2.0}}
    clock = timing.PhaseClock(state)
    with clock.phase("floor"):
        pass
    with clock.phase("test"):
        pass
    assert state["phases"]["floor"] >= 2.0 and 0.0 <= state["phases"]["test"] < 1.0


def test_plan_names_the_runs_their_processes_and_an_estimate():
    runs = [("reptile", 2, 1.0), ("maml", 2, 1.0), ("pretrain", 1, 0.0)]
    words = timing.plan_words(runs, "cpu:300", {"cpu_seconds": 300})
    assert "3 algorithms x 1 seed(s) = 3 runs at --budget cpu:300" in words
    assert "reptile on 2 processes" in words and "pretrain on 1 process)" in words
    assert "1 run(s) already finished" in words
    # two pending runs of 300 CPU-s on 2 processes, plus 30%: 390 s
    assert "estimated wall time 6 min" in words
    assert "known after the first run" in timing.plan_words(runs, "work:1e6", {"work": 1e6})
    tuned = timing.plan_words(runs, "60", {"seconds": 60}, tuning=(8, {"seconds": 15}))
    assert "after 8 tuning trials" in tuned and "estimated wall time 5 min" in tuned  # (2 x 60 + 8 x 15) x 1.3 = 312 s
    # two runs at a time share the four pending runs of 300 CPU-s on 1 process each: 2 x 390 s
    shared = timing.plan_words([(name, 1, 1.0) for name in ("reptile", "fomaml", "maml", "pretrain")], "cpu:300",
                               {"cpu_seconds": 300}, workers=2)
    assert "2 runs at a time" in shared and "estimated wall time 13 min" in shared
    # never less than one run's own time (300 CPU-s on 2 processes, plus 30%: 195 s)
    assert "estimated wall time 3 min" in timing.plan_words(runs[:1], "cpu:300", {"cpu_seconds": 300}, workers=2)
    # resumed: half of reptile's training done, so 150 CPU-s of training left on 2 processes plus the scoring of
    # the whole run (30% of 300 / 2): 120 s, and maml's 195 s
    resumed = timing.plan_words([("reptile", 2, 0.5), *runs[1:]], "cpu:300", {"cpu_seconds": 300})
    assert "1 part-trained (resumed from their checkpoints)" in resumed and "estimated wall time 5 min" in resumed


def test_run_all_keeps_the_order_and_counts_only_runs_trained_here(capsys):
    class Cfg:
        def __init__(self, algorithm, seed):
            self.algorithm, self.seed = algorithm, seed

    configs = [Cfg("a", 0), Cfg("b", 0), Cfg("c", 0)]
    out = timing.run_all(configs, lambda c: {"algorithm": c.algorithm}, lambda c: c.algorithm == "b", progress=False)
    assert [s["algorithm"] for s in out] == ["a", "b", "c"]
    err = capsys.readouterr().err
    assert "compare: 1/2 runs done" in err and "compare: 2/2 runs done" in err and "about 0 s left" in err


def test_a_run_records_its_split_and_scores_its_floor_on_the_first_episodes(tmp_path):
    cfg = expand({**TINY, "algorithm": "fomaml", "test_episodes": 6, "floor_episodes": 4,
                  "results_dir": str(tmp_path)})[0]
    summary = train_and_evaluate(cfg, progress=False)
    split = summary["time_split"]
    assert list(split) == list(timing.PHASES) and all(v >= 0 for v in split.values())
    assert sum(split.values()) == pytest.approx(summary["wall_time_s"], rel=1e-6)
    assert split["training"] == summary["train_seconds"] and split["floor"] > 0 and split["test"] > 0
    episodes = pd.read_csv(run_dir(cfg) / "episodes.csv")
    assert len(episodes) == 6 and episodes["floor_loss"].notna().tolist() == [True] * 4 + [False] * 2
    assert summary["floor_loss_mean"] == pytest.approx(episodes["floor_loss"][:4].mean())
    assert summary["floor_episodes"] == 4 and math.isfinite(summary["train_tasks_loss_mean"])
    # the floor's subset is the run's identity (other numbers); all episodes (0) keeps older run ids
    assert cfg.run_id() != expand({**TINY, "algorithm": "fomaml", "test_episodes": 6})[0].run_id()
    assert "floor_episodes" not in expand({**TINY, "algorithm": "fomaml"})[0].identity()


def test_own_data_defaults_give_reptile_the_processes_and_batch_their_scoring(tmp_path):
    from metacompare.workflows.data_defaults import data_config

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(120, 4)), columns=list("abcd"))
    frame["label"] = np.repeat(range(12), 10)
    frame.to_csv(tmp_path / "t.csv", index=False)
    one, two = data_config(tmp_path / "t.csv", ways=3), data_config(tmp_path / "t.csv", ways=3, procs=2)
    assert "inner_chains" not in one["per_algorithm"]["reptile"] and two["per_algorithm"]["reptile"]["inner_chains"] == 2
    assert one["eval_batch"] == 50 and one["floor_episodes"] == 100 and one["eval_episodes"] == 50
    from metacompare.engines import distributed

    reptile = expand({k: v for k, v in two.items() if k != "algorithm"} | {"algorithm": "reptile"})[0]
    assert distributed.refusal(reptile, 2) is None
