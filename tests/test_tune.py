"""Tuning: the same number of trials per algorithm, validation only, resumable after a kill."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from metacompare.workflows import tune
from metacompare.config.loading import ConfigError

@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared, oversubscribed CPU these tiny runs are several times faster."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


ROOT = Path(__file__).resolve().parents[1]
TINY = {"experiment": "tiny", "algorithm": ["fomaml", "reptile"], "dataset": "sine", "model": "mlp", "shots": 5,
        "query": 5, "iterations": 4, "eval_interval": 2, "eval_episodes": 2, "test_episodes": 3,
        "eval_inner_steps": 1, "meta_batch_size": 2, "checkpoint_interval": 1,
        "per_algorithm": {"reptile": {"inner_steps": 2, "outer_optimizer": "sgd", "outer_lr": 0.1}}}
SPACE = {"trials": 2, "seeds": 2, "trial_budget": {"iterations": 4}, "evaluations": 2,
         "space": {"inner_lr": {"log": [0.001, 0.1]}, "meta_batch_size": {"choice": [1, 2]}},
         "per_algorithm": {"reptile": {"outer_lr": {"log": [0.03, 1.0]}}}}


def write(tmp_path: Path, section: dict | None = None, **fields) -> Path:
    path = tmp_path / "tune.yaml"
    raw = {**TINY, "results_dir": str(tmp_path / "results"), **fields}
    if section is not None:
        raw["tune"] = section
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_base_file_with_set_edits_and_per_algorithm_spaces(tmp_path):
    config = write(tmp_path)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({"base": config.name, "experiment": "other", "set": {"shots": 3},
                                         "tune": SPACE}))
    configs, spec = tune.load(spec_file)
    assert [c.algorithm for c in configs] == ["fomaml", "reptile"]
    assert {c.experiment for c in configs} == {"other"} and {c.shots for c in configs} == {3}
    assert set(spec.space_for("fomaml")) == {"inner_lr", "meta_batch_size"}
    assert spec.space_for("reptile")["outer_lr"] == {"log": [0.03, 1.0]}


@pytest.mark.parametrize("section, message", [
    ({"trails": 3}, "did you mean 'trials'"),
    ({"trials": 0}, "tune.trials must be a positive"),
    ({"space": {"inner_lr": {"log": [0, 1]}}}, "low > 0"),
    ({"space": {"inner_lr": {"uniform": [0.1, 1]}}}, "write one of"),
    ({"space": {"inner_lrr": {"float": [0.1, 1]}}}, "inner_lrr"),
    ({"space": {"inner_steps": {"int": [0, 3]}}}, "inner_steps"),
    ({"trial_budget": {"flops": 3}}, "tune.trial_budget"),
])
def test_bad_tune_sections_are_one_line_errors(tmp_path, section, message):
    with pytest.raises(ConfigError, match=message):
        tune.load(write(tmp_path, section))


def test_a_trial_sees_validation_only_under_its_budget(tmp_path):
    configs, spec = tune.load(write(tmp_path, {**SPACE, "trial_budget": {"work": 500}}))
    trial = tune.trial_config(configs[0], {"inner_lr": 0.05}, spec)
    assert trial.inner_lr == 0.05 and trial.test_episodes == 1 and trial.common_evaluation is None
    assert (trial.budget.work, trial.budget.evaluations, trial.iterations) == (500, 2, tune.UNCAPPED)
    assert trial.eval_episodes == configs[0].eval_episodes and trial.eval_seed == configs[0].eval_seed
    assert Path(trial.results_dir) == tmp_path / "results" / "tiny" / "tune"


def test_selected_score_is_the_best_or_the_last_validation(tmp_path):
    configs, _ = tune.load(write(tmp_path))
    rows = pd.DataFrame({"val_loss_mean": [3.0, 1.0, 2.0]})
    assert tune.selected_score(configs[0], rows) == 2.0
    assert tune.selected_score(tune.with_overrides(configs[0], test_checkpoint="best"), rows) == 1.0


def test_tune_gives_every_algorithm_the_same_trials_and_writes_its_record(tmp_path):
    configs, spec = tune.load(write(tmp_path, SPACE))
    chosen = tune.tune(configs, spec, progress=False)
    folder = tmp_path / "results" / "tiny" / "tune"
    curve = pd.read_csv(folder / "tuning_curve.csv")
    assert curve.groupby("algorithm")["trial"].max().to_dict() == {"fomaml": 2, "reptile": 2}
    for name, rows in curve.groupby("algorithm"):  # the best so far never gets worse (MSE: never rises)
        assert rows["best_so_far"].is_monotonic_decreasing
        assert rows["best_so_far"].iloc[-1] == rows.loc[rows["state"] == "complete", "value"].min()
    record = yaml.safe_load((folder / "search.yaml").read_text())
    assert record["trials_per_algorithm"] == 2 and record["chosen"] == chosen
    assert set(chosen["reptile"]) == {"inner_lr", "meta_batch_size", "outer_lr"}
    assert (folder / "optuna.sqlite3").is_file()
    finals = tune.final_configs(configs, chosen, seeds=2)
    assert [(c.algorithm, c.seed, c.inner_lr) for c in finals] == [
        (a, s, chosen[a]["inner_lr"]) for a in ("fomaml", "reptile") for s in (0, 1)]


def test_a_trial_left_running_by_a_kill_is_retried_with_its_setting(tmp_path):
    configs, spec = tune.load(write(tmp_path, {**SPACE, "trials": 2}, algorithm="fomaml"))
    study = tune.study_for(configs[0], spec)
    killed = study.ask()  # what a kill mid-trial leaves: a RUNNING trial holding its sampled setting
    params = tune.suggest(killed, spec.space_for("fomaml"))
    tune.tune_algorithm(configs[0], spec, progress=False)
    trials = tune.study_for(configs[0], spec).trials
    states = [t.state for t in trials]
    assert states[0] == optuna.trial.TrialState.FAIL
    assert states.count(optuna.trial.TrialState.COMPLETE) + states.count(optuna.trial.TrialState.PRUNED) == 2
    assert trials[1].params == params


def test_the_pruner_stops_a_trial_far_behind_the_median(tmp_path, monkeypatch):
    """A trial whose validation loss is far worse than the earlier trials' is pruned at its second
    evaluation, and its run folder is removed."""
    configs, spec = tune.load(write(tmp_path, {**SPACE, "trials": 4}, algorithm="fomaml"))
    spec.per_algorithm = {}
    losses = iter([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [50.0, 50.0]])
    from metacompare.training import runner

    real = runner.evaluate

    def scripted(*args, **kwargs):
        scores = real(*args, **kwargs)
        scripted.values = scripted.values or list(next(losses))
        return {**scores, "loss_mean": scripted.values.pop(0)}

    scripted.values = []
    monkeypatch.setattr(runner, "evaluate", scripted)
    study = tune.tune_algorithm(configs[0], spec, progress=False)
    states = [t.state.name for t in sorted(study.trials, key=lambda t: t.number)]
    assert states == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED"]
    assert len(list((tmp_path / "results" / "tiny" / "tune" / "fomaml").glob("fomaml-*"))) == 3


@pytest.mark.slow
def test_sigkill_during_tune_then_rerun_finishes_with_the_same_trial_count(tmp_path):
    path = write(tmp_path, {**SPACE, "trials": 4, "seeds": 1})
    command = [sys.executable, "-m", "metacompare", "tune", str(path), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    database = tmp_path / "results" / "tiny" / "tune" / "optuna.sqlite3"
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None and _finished_trials(database) < 2:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 2 <= _finished_trials(database) < 8  # killed part-way through the 2 x 4 trials
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    curve = pd.read_csv(database.parent / "tuning_curve.csv")
    assert curve.groupby("algorithm")["trial"].max().to_dict() == {"fomaml": 4, "reptile": 4}
    runs = pd.read_csv(tmp_path / "results" / "tiny" / "runs.csv")
    assert sorted(runs["algorithm"]) == ["fomaml", "reptile"] and (runs["status"] == "finished").all()


def _finished_trials(database: Path) -> int:
    if not database.is_file():
        return 0
    try:
        with sqlite3.connect(database) as db:
            return db.execute("select count(*) from trials where state in ('COMPLETE', 'PRUNED')").fetchone()[0]
    except sqlite3.Error:
        return 0
