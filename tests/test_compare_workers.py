"""compare and tune on every core and on a Ray cluster: the same numbers as one after another, fair
placement stated in the report, nothing lost or doubled after a kill."""

from __future__ import annotations

import importlib.util
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from metacompare.workflows import compare, executors, tune
from metacompare.cli import build_parser, main
from tests.faults import CHILD_ENV, ROOT, wait_for
from tests.test_lifecycle_sweep import alive, workers_of
from tests.test_tune import SPACE, TINY, one_thread  # noqa: F401 (autouse fixture)

BUDGET = "work:6000"  # fomaml 100 iterations, reptile 50 (tests/test_compare.py counts the work)
FOLDER = "tiny_compare_work6000"
RUN_COLUMNS = ["run_id", "algorithm", "seed", "status", "iterations_done", "test_loss_mean", "test_loss_ci95"]


def write_config(tmp_path: Path, where: str, **fields) -> Path:
    path = tmp_path / f"{where}.yaml"
    path.write_text(yaml.safe_dump({**TINY, "checkpoint_interval": 10, "results_dir": str(tmp_path / where),
                                    **fields}))
    return path


def run_table(tmp_path: Path, where: str) -> list[tuple]:
    runs = pd.read_csv(tmp_path / where / FOLDER / "runs.csv")
    return sorted(runs[RUN_COLUMNS].itertuples(index=False, name=None))


def scores(tmp_path: Path, where: str) -> pd.DataFrame:
    table = pd.read_csv(tmp_path / where / FOLDER / "compare" / "algorithms.csv")
    return table[["algorithm", "seeds", "finished", "score", "score_ci95", "floor", "iterations_done", "work"]]


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """The reference: the comparison one run after another in this process."""
    tmp_path = tmp_path_factory.mktemp("serial")
    assert main(["compare", str(write_config(tmp_path, "serial")), "--budget", BUDGET, "--no-tune", "--seeds", "2",
                 "--no-progress"]) == 0
    return tmp_path


def test_compare_and_tune_offer_workers_and_an_executor():
    parser = build_parser()
    for command in ("compare", "tune"):
        text = parser._subparsers._group_actions[0].choices[command].format_help()
        assert all(option in text for option in ("--workers", "--executor", "--address")), command


@pytest.mark.parametrize("command", ["compare", "tune", "sweep"])
def test_an_address_without_the_ray_executor_is_refused_in_one_line(tmp_path, command, capsys):
    """It had been ignored: the runs trained on this machine while the user meant a cluster."""
    config = write_config(tmp_path, "local")
    budget = ["--budget", BUDGET] if command == "compare" else []
    assert main([command, str(config), *budget, "--address", "10.0.0.7:6379"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--address 10.0.0.7:6379" in err and "--executor ray" in err
    assert not (tmp_path / "local").exists()


def test_runs_are_handed_out_seed_by_seed_with_the_algorithms_in_turn(tmp_path):
    configs, _ = tune.load(write_config(tmp_path, "order", algorithm=["fomaml", "reptile", "maml"]))
    finals = tune.final_configs(configs, {}, seeds=2)
    assert [(c.algorithm, c.seed) for c in executors.interleave(finals)] == [
        ("fomaml", 0), ("reptile", 0), ("maml", 0), ("fomaml", 1), ("reptile", 1), ("maml", 1)]


def test_more_processes_than_cores_are_refused_in_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(executors, "cores", lambda: 2)
    config = write_config(tmp_path, "refused")
    code = main(["compare", str(config), "--budget", BUDGET, "--workers", "2", "--procs", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "--workers 2 x --procs 2 = 4 processes, more than this machine's 2 cores" in err and "--workers 1" in err
    assert not (tmp_path / "refused").exists()


@pytest.mark.slow  # a pool of two spawned workers: ~100 s on a 2-core machine at load 12, far less idle
def test_two_workers_give_the_one_worker_numbers_and_the_report_says_where_they_ran(tmp_path, serial):
    assert main(["compare", str(write_config(tmp_path, "two")), "--budget", BUDGET, "--no-tune", "--seeds", "2",
                 "--no-progress", "--workers", "2"]) == 0
    assert run_table(tmp_path, "two") == run_table(serial, "serial")
    pd.testing.assert_frame_equal(scores(tmp_path, "two"), scores(serial, "serial"))
    report = (tmp_path / "two" / FOLDER / "compare" / "report.md").read_text()
    assert "Placement: 2 local worker processes" in report and "one torch thread" in report
    assert "Placement: one run at a time" in (serial / "serial" / FOLDER / "compare" / "report.md").read_text()
    # the same finished runs reported by a one-worker command: still where they trained (it had said
    # "one run at a time ... no run had a neighbour")
    assert main(["compare", str(write_config(tmp_path, "two")), "--budget", BUDGET, "--no-tune", "--seeds", "2",
                 "--no-progress"]) == 0
    again = (tmp_path / "two" / FOLDER / "compare" / "report.md").read_text()
    assert "Placement: 2 local worker processes" in again and "one run at a time" not in again


def test_a_report_on_runs_trained_under_two_placements_names_both():
    one, two = "one run at a time in one process", "2 local worker processes on 2 cores"
    summaries = [{"placements": [two]}, {"placements": [one, two]}, {"placements": [one]}, {}]
    line = executors.placement_line(summaries, current=one)
    assert line.startswith("Placement: the runs trained under more than one placement")
    assert f"{two} (2 runs)" in line and f"{one} (3 runs)" in line  # the run without a record: this command's
    assert executors.placement_line([{}, {}], current=one) == f"Placement: {one}."


@pytest.mark.slow  # two spawned workers, six trials: ~150 s on a 2-core machine at load 12
def test_parallel_tuning_gives_every_algorithm_its_trials_through_one_study_file(tmp_path):
    configs, spec = tune.load(write_config(tmp_path, "tuned", tune={**SPACE, "trials": 3}))
    chosen = tune.tune(configs, spec, progress=False, workers=2)
    folder = tmp_path / "tuned" / "tiny" / "tune"
    curve = pd.read_csv(folder / "tuning_curve.csv")
    assert curve.groupby("algorithm")["trial"].max().to_dict() == {"fomaml": 3, "reptile": 3}
    for name, rows in curve.groupby("algorithm"):  # concurrent workers drew different settings
        assert rows["param_inner_lr"].nunique() == 3, name
        complete = rows.loc[rows["state"] == "complete", "param_inner_lr"]
        assert any(math.isclose(chosen[name]["inner_lr"], value, rel_tol=1e-9) for value in complete)
    assert [p.name for p in folder.glob("*.sqlite3")] == ["optuna.sqlite3"]


@pytest.mark.slow  # starts a Ray instance (GCS, raylet, workers)
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (pip install ray)")
def test_a_comparison_on_a_local_ray_cluster_gives_the_one_worker_numbers(tmp_path, serial):
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)
    try:
        compare.compare(write_config(tmp_path, "ray"), BUDGET, tuned=False, seeds=2, progress=False, executor="ray")
    finally:
        ray.shutdown()
    assert run_table(tmp_path, "ray") == run_table(serial, "serial")
    pd.testing.assert_frame_equal(scores(tmp_path, "ray"), scores(serial, "serial"))
    assert "Placement: Ray tasks" in (tmp_path / "ray" / FOLDER / "compare" / "report.md").read_text()


@pytest.mark.slow  # starts a Ray instance and trains runs long enough to be stopped part-way
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (pip install ray)")
def test_sigterm_stops_a_ray_comparison_with_its_runs_checkpointed_and_the_rerun_finishes_them(tmp_path):
    """ray.init puts in a SIGTERM handler that ends the process at once and its tasks were force-killed:
    a stop lost every run's training since its last checkpoint. Periodic checkpoints are off here, so
    any checkpoint is the one a stopped run writes; the rerun finishes every run once."""
    config = write_config(tmp_path, "stopped", checkpoint_interval=10**9)
    command = [sys.executable, "-m", "metacompare", "compare", str(config), "--budget", "work:600000",
               "--no-tune", "--seeds", "1", "--no-progress", "--executor", "ray"]
    folder = tmp_path / "stopped" / "tiny_compare_work600000"
    process = subprocess.Popen(command, cwd=ROOT, env=CHILD_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    training = lambda: len(list(folder.glob("*/metrics.csv"))) == 2  # noqa: E731 (both past their first validation)
    assert wait_for(lambda: training() or process.poll() is not None, timeout=300, interval=0.1)
    time.sleep(2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=executors.RAY_STOP_GRACE_S + 60)
    assert process.returncode == 130, stderr
    assert "metacompare: interrupted" in stderr and "SIGTERM received" not in stderr
    assert not list(folder.glob("*/summary.json")), "a run ended before the stop"
    stopped_at = {path.parent.name: torch.load(path, weights_only=False)["iteration"]
                  for path in folder.glob("*/checkpoint.pt")}
    assert len(stopped_at) == 2 and all(iteration > 0 for iteration in stopped_at.values()), stopped_at
    done = subprocess.run(command, cwd=ROOT, env=CHILD_ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    runs = pd.read_csv(folder / "runs.csv")
    assert len(runs) == 2 and runs["run_id"].is_unique and (runs["status"] == "finished").all()
    assert all(runs.set_index("run_id").loc[run, "iterations_done"] > at for run, at in stopped_at.items())


@pytest.mark.slow  # two worker pools and a comparison long enough to be killed part-way
def test_a_killed_two_worker_comparison_resumes_with_nothing_lost_or_doubled(tmp_path, serial):
    """SIGKILL of the parent mid-way (its workers checkpoint and stop); the rerun finishes every run once,
    and every table equals the uninterrupted comparison's."""
    config = write_config(tmp_path, "killed")
    command = [sys.executable, "-m", "metacompare", "compare", str(config), "--budget", BUDGET, "--no-tune",
               "--seeds", "2", "--no-progress", "--workers", "2"]
    folder = tmp_path / "killed" / FOLDER
    process = subprocess.Popen(command, cwd=ROOT, env=CHILD_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    part_way = lambda: len(list(folder.glob("*/summary.json"))) >= 1 and any(folder.glob("*/checkpoint.pt"))  # noqa: E731
    assert wait_for(lambda: part_way() or process.poll() is not None, timeout=600, interval=0.05)
    workers = workers_of(process)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    assert wait_for(lambda: not any(alive(w) for w in workers), timeout=60, interval=0.1)
    assert len(list(folder.glob("*/summary.json"))) < 4, "the comparison ended before the kill"
    assert not (folder / "compare" / "report.md").exists()
    done = subprocess.run(command, cwd=ROOT, env=CHILD_ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "runs already finished" in done.stdout
    runs = pd.read_csv(folder / "runs.csv")
    assert len(runs) == 4 and runs["run_id"].is_unique and (runs["status"] == "finished").all()
    assert run_table(tmp_path, "killed") == run_table(serial, "serial")
    pd.testing.assert_frame_equal(scores(tmp_path, "killed"), scores(serial, "serial"))
    for name in ("pairwise_episodes.csv", "pairwise_seeds.csv"):
        mine, theirs = (pd.read_csv(where / FOLDER / "compare" / name) for where in (tmp_path / "killed", serial / "serial"))
        pd.testing.assert_frame_equal(mine, theirs)
