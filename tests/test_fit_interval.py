"""The logged training fit every ``fit_interval`` iterations: measurement only, so the run trains to the
same weights, and only the measured iterations cost (and report) a fit."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from metacompare.config.loading import ConfigError, with_overrides
from metacompare.storage import tracking
from metacompare.training.runner import run_dir, train_and_evaluate
from tests.test_budget import tiny
from tests.test_tune import one_thread  # noqa: F401 (autouse fixture: one torch thread)


@pytest.mark.parametrize("algorithm, engine", [("fomaml", {}), ("maml", {"batch_tasks": True}), ("reptile", {}),
                                               ("reptile", {"inner_chains": 2, "inner_state": "carry",
                                                            "inner_optimizer": "adam"}),
                                               ("maml", {"vmap": True}), ("pretrain", {})])
def test_a_sparser_fit_trains_the_same_weights_and_measures_a_tenth(tmp_path, monkeypatch, algorithm, engine):
    logged: dict[int, list[int]] = {}
    weights, summaries = {}, {}
    for every in (1, 10):
        cfg = tiny(tmp_path / str(every), algorithm=algorithm, iterations=40, eval_interval=20, fit_interval=every,
                   **engine)
        steps = logged.setdefault(every, [])
        monkeypatch.setattr(tracking.Trackers, "train", lambda self, step, metrics, steps=steps: steps.append(step))
        summaries[every] = train_and_evaluate(cfg, progress=False)
        weights[every] = torch.load(run_dir(cfg) / "model.pt", weights_only=True)["algorithm"]["model"]
        metrics = pd.read_csv(run_dir(cfg) / "metrics.csv")
        assert metrics["train_loss"].map(math.isfinite).all()  # each validation row has the last measured fit
    assert all(torch.equal(weights[1][k], weights[10][k]) for k in weights[1])
    assert summaries[1]["test_loss_mean"] == summaries[10]["test_loss_mean"]
    assert logged[1] == list(range(1, 41))
    assert logged[10] == [1, 10, 20, 30, 40]


def test_fit_interval_must_be_a_positive_count(tmp_path):
    with pytest.raises(ConfigError, match="fit_interval"):
        with_overrides(tiny(tmp_path), fit_interval=0)


def test_the_default_keeps_recorded_run_ids_and_another_interval_is_another_run(tmp_path):
    cfg = tiny(tmp_path)
    assert "fit_interval" not in cfg.identity()
    assert with_overrides(cfg, fit_interval=10).run_id() != cfg.run_id()
