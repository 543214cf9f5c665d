"""Crash safety: kill a run at random points, rerun it, and get exactly the uninterrupted result.

The runs are real ``python -m metacompare run`` processes on a tiny sine config. SIGKILL leaves no
chance to clean up, so what survives is what was on disk: the last atomic checkpoint. SIGINT and
SIGTERM stop at the end of the current iteration with a checkpoint and exit status 130. Either way,
rerunning the same command must finish the run with bitwise the metrics of a run never stopped.
"""

from __future__ import annotations

import csv
import json
import random
import signal
import time
from pathlib import Path

import pytest
import torch
import yaml

from metacompare.config.loading import load_experiment
from metacompare.storage.results import SUMMARY_COLUMNS
from tests.faults import (cli, cli_process, final_metrics, kill, kill_group, leftovers, one_torch_thread,
                          sine_config, start_run, start_sweep, wait_for, write_config)

one_thread = pytest.fixture(autouse=True)(one_torch_thread)


# A second or two of training at one thread: long enough for kills to land inside it.
KILL_CONFIG = sine_config(iterations=400, eval_interval=50, checkpoint_interval=7, meta_batch_size=2,
                          eval_episodes=3, test_episodes=5, eval_inner_steps=2)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The uninterrupted run, in its own process like the interrupted ones."""
    base = tmp_path_factory.mktemp("reference")
    config = write_config(base / "tiny.yaml", KILL_CONFIG)
    done = cli_process("run", config, "--results-dir", base / "results", "--no-progress", "--no-report")
    assert done.returncode == 0, done.stderr
    folder = run_folder(base / "results", config)
    rows, scores = final_metrics(folder)
    summary = json.loads((folder / "summary.json").read_text())
    training = summary["seconds_per_iteration"] * KILL_CONFIG["iterations"]
    return {"rows": rows, "scores": scores, "training_s": training, "config": config}


def run_folder(results: Path, config: Path) -> Path:
    cfg = load_experiment(config)[0]
    return Path(results) / cfg.experiment / cfg.run_id()


def written_since(path: Path, launched: float):
    """True once ``path`` has been (re)written after ``launched`` (a time.time())."""
    return lambda: path.is_file() and path.stat().st_mtime >= launched


def check_results_intact(results: Path, folder: Path, reference: dict) -> None:
    """Every file parses, the run has exactly one row, and its numbers are the uninterrupted ones."""
    with open(results / folder.parent.name / "runs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["run_id"] for r in rows] == [folder.name]
    assert list(rows[0]) == SUMMARY_COLUMNS and rows[0]["status"] == "finished"
    assert yaml.safe_load((folder / "config.yaml").read_text())["iterations"] == KILL_CONFIG["iterations"]
    torch.load(folder / "model.pt", weights_only=False)
    assert not (folder / "checkpoint.pt").exists()
    assert leftovers(results) == []
    metrics, scores = final_metrics(folder)
    assert metrics == reference["rows"]  # bitwise: the CSV holds each float's repr
    assert scores == reference["scores"]
    assert float(rows[0]["test_loss_mean"]) == reference["scores"]["test_loss_mean"]


def finish(results: Path, reference: dict) -> None:
    """Rerun the same command to the end and check the outcome against the uninterrupted run."""
    final = start_run(reference["config"], results)
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err
    assert "test MSE" in out
    check_results_intact(results, run_folder(results, reference["config"]), reference)


def kill_and_resume(tmp_path: Path, reference: dict, rng: random.Random, kills: int) -> int:
    """SIGKILL the run up to ``kills`` times at random points of training, then let it finish.

    Returns how many launches were killed (a resumed launch may finish before its kill time).
    """
    results = tmp_path / "results"
    folder = run_folder(results, reference["config"])
    killed = 0
    for _ in range(kills):
        launched = time.time() - 0.01
        process = start_run(reference["config"], results)
        # a launch that finds the run finished (killed after its summary) exits without training
        started = written_since(folder / "config.yaml", launched)
        assert wait_for(lambda: started() or process.poll() is not None)
        time.sleep(rng.uniform(0.0, reference["training_s"]))
        code, _, err = kill(process, signal.SIGKILL)
        if code == 0:  # it finished first; nothing left to interrupt
            break
        assert code == -signal.SIGKILL, err
        killed += 1
    finish(results, reference)
    return killed


@pytest.mark.slow  # 50 s: two killed-and-resumed real runs; the deterministic kill points run by default
@pytest.mark.parametrize("trial", range(2))
def test_sigkill_at_a_random_point_then_resume(trial, tmp_path, reference):
    assert kill_and_resume(tmp_path, reference, random.Random(1000 + trial), kills=1) == 1


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(10))
def test_sigkill_several_times_then_resume(trial, tmp_path, reference):
    rng = random.Random(2000 + trial)
    assert kill_and_resume(tmp_path, reference, rng, kills=rng.randint(2, 4)) >= 1


@pytest.mark.slow
def test_sigint_then_sigterm_checkpoint_exit_130_and_resume_exactly(tmp_path, reference):
    """Ctrl-C, rerun, SIGTERM, rerun: each stop saves a whole iteration; the end is the uninterrupted run."""
    results = tmp_path / "results"
    folder = run_folder(results, reference["config"])
    rng, last = random.Random(7), 0
    for sig in (signal.SIGINT, signal.SIGTERM):
        launched = time.time() - 0.01
        process = start_run(reference["config"], results)
        assert wait_for(written_since(folder / "checkpoint.pt", launched))  # in the training loop
        time.sleep(rng.uniform(0.0, reference["training_s"] / 4))
        code, _, err = kill(process, sig)
        assert code == 130, (sig, err)
        assert err.strip().splitlines()[-1].startswith("metacompare: interrupted; progress is checkpointed")
        assert "Traceback" not in err
        assert not (folder / "summary.json").exists()
        state = torch.load(folder / "checkpoint.pt", weights_only=False)
        assert last < state["iteration"] < KILL_CONFIG["iterations"]
        # a whole iteration: the metrics rows up to it, and only those
        assert [r["iteration"] for r in state["metrics"]] == list(range(50, state["iteration"] + 1, 50))
        last = state["iteration"]
    finish(results, reference)


# ------------------------------------------------------------------------------------------ sweeps
SWEEP = {"experiment": "kills", "base": {k: v for k, v in KILL_CONFIG.items() if k != "experiment"},
         "grid": {"algorithm": ["fomaml", "reptile"], "seed": [0, 1]}}


def sweep_outcome(results: Path) -> dict[str, tuple]:
    """run_id -> (metrics rows, test scores) of every run folder of the sweep."""
    return {folder.name: final_metrics(folder) for folder in sorted((results / "kills").glob("*-*"))
            if (folder / "summary.json").is_file()}


@pytest.fixture(scope="module")
def sweep_reference(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("sweep_reference")
    sweep = write_config(base / "kills.yaml", SWEEP)
    done = cli_process("sweep", sweep, "--results-dir", base / "results", "--workers", "2", "--no-progress")
    assert done.returncode == 0, done.stderr
    with open(base / "results" / "kills" / "runs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    training = sum(float(r["seconds_per_iteration"]) * KILL_CONFIG["iterations"] for r in rows) / 2
    return {"sweep": sweep, "outcome": sweep_outcome(base / "results"), "training_s": training}


def kill_sweep_and_resume(tmp_path: Path, reference: dict, rng: random.Random, kills: int) -> int:
    """SIGKILL a whole sweep (parent and workers) at random points, rerun it, compare with the reference."""
    results, killed = tmp_path / "results", 0
    for _ in range(kills):
        launched = time.time() - 0.01
        process = start_sweep(reference["sweep"], results, "--workers", "2")
        def started():
            return any(p.stat().st_mtime >= launched for p in (results / "kills").glob("*/config.yaml"))

        assert wait_for(lambda: started() or process.poll() is not None)
        time.sleep(rng.uniform(0.0, reference["training_s"]))
        code, _, err = kill_group(process, signal.SIGKILL)
        if code == 0:
            break
        assert code == -signal.SIGKILL, err
        killed += 1
    final = start_sweep(reference["sweep"], results, "--workers", "2")
    out, err = final.communicate(timeout=600)
    assert final.returncode == 0, err
    with open(results / "kills" / "runs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["run_id"] for r in rows) == sorted(reference["outcome"])  # none lost, none doubled
    assert {r["status"] for r in rows} == {"finished"}
    assert sweep_outcome(results) == reference["outcome"]  # every run bitwise as if never killed
    assert not list(results.rglob("checkpoint.pt")) and leftovers(results) == []
    for folder in (results / "kills").glob("*-*"):
        json.loads((folder / "summary.json").read_text())
        yaml.safe_load((folder / "config.yaml").read_text())
    return killed


@pytest.mark.slow  # 85 s with its reference sweep: the default run's kill/resume cases are single runs
def test_sigkill_a_sweep_then_rerun_it(tmp_path, sweep_reference):
    assert kill_sweep_and_resume(tmp_path, sweep_reference, random.Random(3000), kills=1) == 1


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(5))
def test_sigkill_a_sweep_several_times_then_rerun_it(trial, tmp_path, sweep_reference):
    rng = random.Random(4000 + trial)
    assert kill_sweep_and_resume(tmp_path, sweep_reference, rng, kills=rng.randint(2, 3)) >= 1


# ------------------------------------------------------------------------------- in-process stops
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stop_signal_mid_iteration_finishes_it_checkpoints_and_resumes_exactly(sig, tmp_path, capsys, monkeypatch):
    """A signal arriving mid-iteration: the iteration completes, its checkpoint is written, exit 130;
    the rerun ends bitwise where an uninterrupted run does (in this process, so it is quick)."""
    from metacompare.algorithms.base import MetaAlgorithm

    config = write_config(tmp_path / "tiny.yaml", sine_config(iterations=6, checkpoint_interval=100))
    original, calls = MetaAlgorithm.meta_train_step, []

    def step(self, tasks):
        calls.append(len(tasks))
        if len(calls) == 4:
            import os

            os.kill(os.getpid(), sig)
        return original(self, tasks)

    monkeypatch.setattr(MetaAlgorithm, "meta_train_step", step)
    args = ["run", str(config), "--results-dir", str(tmp_path / "r"), "--no-progress", "--no-report"]
    code, _, err = cli(capsys, *args)
    assert code == 130 and "interrupted" in err
    folder = run_folder(tmp_path / "r", config)
    state = torch.load(folder / "checkpoint.pt", weights_only=False)
    assert state["iteration"] == 4 and [r["iteration"] for r in state["metrics"]] == [3]
    monkeypatch.setattr(MetaAlgorithm, "meta_train_step", original)
    assert cli(capsys, *args)[0] == 0
    resumed = final_metrics(folder)
    assert cli(capsys, *[*args[:3], str(tmp_path / "fresh"), "--no-progress", "--no-report"])[0] == 0
    assert resumed == final_metrics(run_folder(tmp_path / "fresh", config))


def test_a_moved_results_folder_still_resumes(tmp_path, capsys, monkeypatch):
    """The checkpoint check ignores where files live: a copied results folder resumes, not refuses."""
    from metacompare.algorithms.base import MetaAlgorithm

    config = write_config(tmp_path / "tiny.yaml", sine_config())
    original = MetaAlgorithm.meta_train_step

    def interrupted(self, tasks):
        import os

        os.kill(os.getpid(), signal.SIGINT)
        return original(self, tasks)

    monkeypatch.setattr(MetaAlgorithm, "meta_train_step", interrupted)
    assert cli(capsys, "run", config, "--results-dir", tmp_path / "old", "--no-progress", "--no-report")[0] == 130
    monkeypatch.setattr(MetaAlgorithm, "meta_train_step", original)
    (tmp_path / "old").rename(tmp_path / "new")
    code, out, err = cli(capsys, "run", config, "--results-dir", tmp_path / "new", "--no-progress", "--no-report")
    assert code == 0, err
    summary = json.loads((run_folder(tmp_path / "new", config) / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["iterations_done"] == 6


def test_a_crash_after_the_summary_still_records_the_run(tmp_path, capsys):
    """Killed between summary.json and runs.csv: the rerun adds the missing row, once."""
    config = write_config(tmp_path / "tiny.yaml", sine_config())
    args = ["run", str(config), "--results-dir", str(tmp_path / "r"), "--no-progress", "--no-report"]
    assert cli(capsys, *args)[0] == 0
    table = tmp_path / "r" / "tiny" / "runs.csv"
    table.unlink()
    assert cli(capsys, *args)[0] == 0
    assert cli(capsys, *args)[0] == 0
    with open(table, newline="") as handle:
        assert [r["run_id"] for r in csv.DictReader(handle)] == [run_folder(tmp_path / "r", config).name]


def test_divergence_is_recorded_not_fatal(tmp_path, capsys):
    """A huge inner learning rate makes the loss non-finite: status 'diverged' with the iteration."""
    config = write_config(tmp_path / "tiny.yaml", sine_config(inner_lr=1e6, iterations=20))
    args = ["run", str(config), "--results-dir", str(tmp_path / "r"), "--no-progress", "--no-report"]
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    folder = run_folder(tmp_path / "r", config)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert 1 <= summary["diverged_at"] <= 20 and summary["iterations_done"] == summary["diverged_at"]
    assert f"diverged at iteration {summary['diverged_at']}" in out
    with open(tmp_path / "r" / "tiny" / "runs.csv", newline="") as handle:
        [row] = list(csv.DictReader(handle))
    assert row["status"] == "diverged" and int(row["diverged_at"]) == summary["diverged_at"]
    assert not (folder / "checkpoint.pt").exists() and leftovers(tmp_path) == []
    assert cli(capsys, *args)[0] == 0  # a rerun keeps the verdict and adds no row
    with open(tmp_path / "r" / "tiny" / "runs.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 1


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_killed_after_the_summary_before_the_checkpoint_went(tmp_path, capsys, command):
    """The window between summary.json and removing checkpoint.pt: the rerun, by `run` or by `sweep`
    (which skips finished runs without starting them), keeps the verdict and removes the stale checkpoint."""
    config = write_config(tmp_path / "tiny.yaml", sine_config())
    args = ["run", str(config), "--results-dir", str(tmp_path / "r"), "--no-progress", "--no-report"]
    assert cli(capsys, *args)[0] == 0
    folder = run_folder(tmp_path / "r", config)
    summary = (folder / "summary.json").read_text()
    (folder / "checkpoint.pt").write_bytes(b"left by a kill")
    if command == "sweep":
        sweep = tmp_path / "one.yaml"
        sweep.write_text(yaml.safe_dump({"experiment": "tiny", "base": str(config), "grid": {"seed": [3]}}))
        args = ["sweep", str(sweep), "--workers", "1", "--results-dir", str(tmp_path / "r"), "--no-progress"]
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    assert not (folder / "checkpoint.pt").exists() and (folder / "summary.json").read_text() == summary
    with open(tmp_path / "r" / "tiny" / "runs.csv", newline="") as handle:
        assert [r["run_id"] for r in csv.DictReader(handle)] == [folder.name]
