"""A run's life from start-up clean-up to its final row, under the faults a user meets.

Forced reruns stopped part-way, two runs of one config at once, an unreadable results table, a
full disk, a stop during the final test, broken files of finished runs, settings an algorithm
ignores, thread counts, and what `evaluate` accepts. All in this process on a tiny sine config.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import re
import signal
import subprocess
import sys

import pytest
import torch

from metacompare.storage import results

from metacompare.training import runner
from metacompare.algorithms import ALGORITHMS
from metacompare.algorithms.base import MetaAlgorithm
from metacompare.config.loading import ConfigError, RunConfig, expand, load_experiment
from tests.faults import cli, final_metrics, leftovers, omniglot_config, omniglot_zip, sine_config, write_config

RUN = sine_config(iterations=6, checkpoint_interval=2)


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def run_args(config, results_dir, *extra):
    return ["run", str(config), "--results-dir", str(results_dir), "--no-progress", "--no-report", *extra]


def folder_of(results_dir, config):
    cfg = load_experiment(config)[0]
    return results_dir / cfg.experiment / cfg.run_id()


def rows_of(table):
    with open(table, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def reference(tmp_path, capsys):
    """The tiny run, uninterrupted: its metrics and scores."""
    config = write_config(tmp_path / "tiny.yaml", RUN)
    assert cli(capsys, *run_args(config, tmp_path / "ref"))[0] == 0
    return config, final_metrics(folder_of(tmp_path / "ref", config))


def stop_at(monkeypatch, iteration: int) -> None:
    """SIGINT this process during meta-iteration ``iteration`` (the runner checkpoints, exit 130)."""
    original, calls = MetaAlgorithm.meta_train_step, []

    def step(self, tasks):
        calls.append(1)
        if len(calls) == iteration:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, tasks)

    monkeypatch.setattr(MetaAlgorithm, "meta_train_step", step)


# ------------------------------------------------------------------------------- forced reruns
def test_a_forced_rerun_stopped_part_way_is_resumed_not_taken_as_finished(tmp_path, capsys, monkeypatch, reference):
    config, expected = reference
    out = tmp_path / "r"
    assert cli(capsys, *run_args(config, out))[0] == 0
    folder = folder_of(out, config)
    with monkeypatch.context() as patch:
        stop_at(patch, 3)
        assert cli(capsys, *run_args(config, out, "--force"))[0] == 130
    assert not (folder / "summary.json").exists() and (folder / "checkpoint.pt").is_file()
    assert rows_of(out / "tiny" / "runs.csv") == []  # the old row is not a finished run any more
    code, printed, err = cli(capsys, *run_args(config, out))
    assert code == 0, err
    assert final_metrics(folder) == expected  # every metrics row, the uninterrupted numbers
    assert [r["status"] for r in rows_of(out / "tiny" / "runs.csv")] == ["finished"]


# ------------------------------------------------------------------------- temporaries of others
def test_start_up_removes_only_temporaries_of_dead_writers(tmp_path):
    folder = tmp_path / "exp" / "run"
    folder.mkdir(parents=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    try:
        live_tmp = folder / f".checkpoint.pt.{sleeper.pid}.abc123.tmp"
        dead_tmp = folder / f".checkpoint.pt.{dead}.def456.tmp"
        old_tmp = folder / ".metrics.csv.xyz789.tmp"  # the name before pids were recorded
        for path in (live_tmp, dead_tmp, old_tmp):
            path.write_text("half")
        runner._start_clean(folder, RunConfig(), force=False)
        assert live_tmp.exists() and not dead_tmp.exists() and not old_tmp.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_atomic_write_names_its_temporary_after_its_process(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (seen.append(a), real_replace(a, b)))
    results.atomic_write(tmp_path / "f.txt", "x")
    assert os.path.basename(seen[0]).startswith(f".f.txt.{os.getpid()}.")


# ------------------------------------------------------------------ an unreadable results table
@pytest.mark.parametrize("content", [b"run_id,status\nmaml-1,finished,extra\n", b"\xff\xfe", b""])
def test_an_unreadable_runs_table_fails_at_start_not_after_training(tmp_path, capsys, monkeypatch, content):
    config = write_config(tmp_path / "tiny.yaml", RUN)
    table = tmp_path / "r" / "tiny" / "runs.csv"
    table.parent.mkdir(parents=True)
    table.write_bytes(content)
    monkeypatch.setattr(MetaAlgorithm, "meta_train_step", lambda *a: pytest.fail("trained"))
    code, _, err = cli(capsys, *run_args(config, tmp_path / "r"))
    assert code == 2 and err.count("\n") == 1 and "runs.csv" in err and "move it aside" in err
    assert not folder_of(tmp_path / "r", config).exists() or not any(folder_of(tmp_path / "r", config).iterdir())


# --------------------------------------------------------------------------------- a full disk
def test_a_full_disk_is_one_line_and_the_rerun_resumes(tmp_path, capsys, monkeypatch, reference):
    config, expected = reference
    writes, real_fsync = [], os.fsync

    def fsync(fd):
        writes.append(fd)
        if len(writes) == 4:  # the second checkpoint, after the first was written whole
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", fsync)
        code, _, err = cli(capsys, *run_args(config, tmp_path / "r"))
    assert code == 2 and err.count("\n") == 1 and "No space left on device" in err and "rerun" in err
    assert leftovers(tmp_path / "r") == []
    assert cli(capsys, *run_args(config, tmp_path / "r"))[0] == 0
    assert final_metrics(folder_of(tmp_path / "r", config)) == expected


# ------------------------------------------------------------------- a stop during the test
def test_a_run_stopped_during_its_final_test_records_all_its_figures(tmp_path, capsys, monkeypatch, reference):
    config, expected = reference
    from metacompare.training import scoring

    original = scoring.score_test

    def score_test(algorithm, episodes, cfg, device, dtype, prefix, *args):
        if prefix == "test_":  # the final test, after training ended (not the untrained floor)
            raise KeyboardInterrupt("stopped")
        return original(algorithm, episodes, cfg, device, dtype, prefix, *args)

    with monkeypatch.context() as patch:
        patch.setattr(scoring, "score_test", score_test)
        assert cli(capsys, *run_args(config, tmp_path / "r"))[0] == 130
    folder = folder_of(tmp_path / "r", config)
    assert torch.load(folder / "checkpoint.pt", weights_only=True)["iteration"] == RUN["iterations"]
    assert cli(capsys, *run_args(config, tmp_path / "r"))[0] == 0
    summary = json.loads((folder / "summary.json").read_text())
    assert math.isfinite(summary["seconds_per_iteration"]) and summary["seconds_per_iteration"] > 0
    assert summary["peak_memory_mb"] > 0 and summary["iterations_done"] == RUN["iterations"]
    assert final_metrics(folder) == expected


# ----------------------------------------------------------------- broken files of finished runs
@pytest.mark.parametrize("content", ["", "{\"run_id\": ", "[]", "{\"run_id\": 1}", None])
def test_a_broken_summary_is_one_line_naming_it(tmp_path, capsys, content):
    config = write_config(tmp_path / "tiny.yaml", sine_config(iterations=2, eval_interval=2))
    assert cli(capsys, *run_args(config, tmp_path / "r"))[0] == 0
    summary = folder_of(tmp_path / "r", config) / "summary.json"
    summary.unlink()
    summary.mkdir() if content is None else summary.write_text(content)
    code, _, err = cli(capsys, *run_args(config, tmp_path / "r"))
    assert code == 2 and err.count("\n") == 1 and "summary.json" in err and "delete it to redo this run" in err


def test_finished_runs_count_as_finished_beside_a_broken_one_in_a_sweep(tmp_path):
    from metacompare.workflows.executors import finished_runs
    from metacompare.workflows.sweep import expand_sweep

    configs = expand_sweep({"experiment": "e", "base": {**RUN, "results_dir": str(tmp_path)},
                            "grid": {"seed": [0, 1]}})
    for cfg in configs:
        runner.train_and_evaluate(cfg, progress=False)
    (runner.run_dir(configs[0]) / "summary.json").write_text("{truncated")
    finished, todo = finished_runs(configs, tmp_path / "e")
    assert list(finished) == [configs[1].run_id()] and todo == [configs[0]]


def test_report_goes_on_past_an_unreadable_experiment(tmp_path, capsys):
    good = write_config(tmp_path / "good.yaml", sine_config(experiment="good", iterations=2, eval_interval=2))
    assert cli(capsys, *run_args(good, tmp_path / "r"))[0] == 0
    (tmp_path / "r" / "bad").mkdir()
    (tmp_path / "r" / "bad" / "runs.csv").write_bytes(b"\x00\x01")
    code, out, err = cli(capsys, "report", tmp_path / "r", "--no-progress")  # stderr: the error line alone
    assert code == 2 and "report: " in out and "good" in out
    assert err.count("\n") == 1 and "bad" in err


# ------------------------------------------------------------------ settings an algorithm ignores
@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_a_setting_the_algorithm_ignores_is_refused(name):
    """Every optional field (config.OPTIONAL_FIELDS) against every algorithm's declared ``uses``."""
    from metacompare.config.loading import OPTIONAL_FIELDS

    assert OPTIONAL_FIELDS  # carrying Adam's state across tasks is Reptile's alone
    raw = sine_config(algorithm=name, inner_optimizer="adam", inner_state="carry")
    if "inner_state" in ALGORITHMS[name].uses:
        assert expand(raw)[0].inner_state == "carry"
    else:
        with pytest.raises(ConfigError, match=f"inner_state: {re.escape(name)} ignores it"):  # maml++
            expand(raw)
    assert expand(sine_config(algorithm=name))[0].inner_state == "reset"


def test_per_algorithm_settings_for_the_algorithm_that_uses_them_are_kept():
    configs = expand(sine_config(algorithm=["reptile", "fomaml"], inner_optimizer="adam",
                                 per_algorithm={"reptile": {"inner_state": "carry"}}))
    assert [(c.algorithm, c.inner_state) for c in configs] == [("reptile", "carry"), ("fomaml", "reset")]


# ------------------------------------------------------------------------------ thread counts
def test_a_runs_numbers_do_not_depend_on_the_callers_thread_count(tmp_path):
    cfg = expand(sine_config(iterations=4, eval_interval=2))[0]
    outcomes = []
    for threads in (2, 1):
        torch.set_num_threads(threads)
        run = expand({**cfg.to_dict(), "results_dir": str(tmp_path / f"t{threads}")})[0]
        summary = runner.train_and_evaluate(run, progress=False)
        assert summary["torch_threads"] == runner.RUN_THREADS == 1
        outcomes.append(final_metrics(runner.run_dir(run)))
    assert outcomes[0] == outcomes[1]


# --------------------------------------------------------------------------------- evaluate
@pytest.fixture
def trained(tmp_path):
    """A tiny 20-way Omniglot run trained in bfloat16 (its model.pt), on generated drawings."""
    omniglot_zip(tmp_path / "data" / "images_background_small1.zip", alphabets=4, characters=6, drawers=3)
    raw = omniglot_config(tmp_path / "data", ways=5, precision="bfloat16", results_dir=str(tmp_path / "r"))
    cfg = expand(raw)[0]
    runner.train_and_evaluate(cfg, progress=False)
    return runner.run_dir(cfg)


def test_evaluate_loads_a_bfloat16_run(trained):
    from metacompare.workflows.lake import load_trained

    algorithm, cfg = load_trained(trained)
    assert cfg.precision == "bfloat16" and next(algorithm.model.parameters()).dtype == torch.float32
    reference = torch.load(trained / "model.pt", weights_only=True)["algorithm"]["model"]
    assert all(torch.equal(reference[k], v) for k, v in algorithm.model.state_dict().items())


@pytest.mark.parametrize("override,allowed", [
    ("filters=8", False), ("ways=3", False), ("omniglot.image_size=28", False), ("omniglot.image_size=16", True), ("omniglot.rotations=true", True),
    ("algorithm=pretrain", False), ("evaluation=non_transductive", True), ("eval_inner_steps=3", True),
])
def test_evaluate_refuses_a_set_that_changes_the_network(trained, override, allowed):
    from metacompare.errors import UserError
    from metacompare.workflows.lake import load_trained

    if allowed:
        assert load_trained(trained, [override])[1].to_dict() != load_trained(trained)[1].to_dict()
    else:
        with pytest.raises(UserError, match=f"--set {override.split('=')[0].split('.')[0]}"):
            load_trained(trained, [override])


def test_evaluate_refuses_a_weights_file_that_would_run_code(tmp_path, capsys):
    from tests.test_files import Payload

    marker = tmp_path / "ran"
    torch.save({"config": RunConfig().to_dict(), "algorithm": Payload(marker)}, tmp_path / "model.pt")
    code, _, err = cli(capsys, "evaluate", tmp_path / "model.pt", "--lake-runs", tmp_path)
    assert code == 2 and "could run code" in err and err.count("\n") == 1 and not marker.exists()


# ------------------------------------------------------------------------ Lake's label files
@pytest.mark.parametrize("content,needle", [(b"\xff\xfe\x00", "is not UTF-8"), (None, "is a folder"),
                                            (b"", "lists no test items")])
def test_a_broken_class_labels_file_names_itself(tmp_path, content, needle):
    from metacompare.errors import UserError
    from metacompare.data.lake_runs import read_run
    from tests.test_lake import write_run

    write_run(tmp_path, 1, list(range(20)), list(range(20)), seed=0)
    labels = tmp_path / "run01" / "class_labels.txt"
    labels.unlink()
    labels.mkdir() if content is None else labels.write_bytes(content)
    with pytest.raises(UserError, match=needle) as caught:
        read_run(tmp_path / "run01", 28)
    assert "class_labels.txt" in str(caught.value) and "\n" not in str(caught.value)


# ------------------------------------------------------------------- two runs of one config
@pytest.mark.slow  # two real processes training side by side: ~20 s on a shared 2-core machine
def test_two_runs_of_one_config_at_once_both_finish_with_one_row(tmp_path):
    from tests.faults import start_run

    config = write_config(tmp_path / "tiny.yaml", sine_config(iterations=300, eval_interval=50, checkpoint_interval=1))
    first, second = (start_run(config, tmp_path / "r") for _ in range(2))
    for process in (first, second):
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    assert [r["status"] for r in rows_of(tmp_path / "r" / "tiny" / "runs.csv")] == ["finished"]
    assert leftovers(tmp_path / "r") == [] and not (folder_of(tmp_path / "r", config) / "checkpoint.pt").exists()
