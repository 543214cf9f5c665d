"""The command line end to end, on tiny budgets: what a user types, what lands on disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from metacompare.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "iterations=4", "--set", "eval_interval=2", "--set", "eval_episodes=3",
        "--set", "test_episodes=5", "--no-progress"]


def test_help_lists_the_subcommands():
    out = subprocess.run([sys.executable, "-m", "metacompare", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0
    for command in ("run", "download"):
        assert command in out.stdout


def test_run_sine_writes_config_metrics_summary_and_table(tmp_path, capsys):
    assert main(["run", str(ROOT / "configs/sine.yaml"), "--results-dir", str(tmp_path), *TINY]) == 0
    printed = capsys.readouterr().out
    assert printed.count("test MSE") == 3
    experiment = tmp_path / "sine"
    table = pd.read_csv(experiment / "runs.csv")
    assert sorted(table.algorithm) == ["fomaml", "maml", "reptile"]
    assert (table.status == "finished").all() and (table.iterations_done == 4).all()
    for run_id in table.run_id:
        folder = experiment / run_id
        config = yaml.safe_load((folder / "config.yaml").read_text())
        assert config["iterations"] == 4 and config["results_dir"] == str(tmp_path)
        metrics = pd.read_csv(folder / "metrics.csv")
        assert metrics.iteration.tolist() == [2, 4]
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["test_loss_mean"] > 0 and summary["test_loss_ci95"] > 0
        assert summary["seconds_per_iteration"] > 0 and summary["peak_memory_mb"] > 0
        assert set(summary["versions"]) >= {"torch", "learn2learn", "higher", "python"}
        assert summary["git_commit"]
        assert not (folder / "checkpoint.pt").exists()


def test_rerunning_a_finished_config_skips_it(tmp_path, capsys):
    args = ["run", str(ROOT / "configs/sine.yaml"), "--results-dir", str(tmp_path), "--set", "algorithm=maml", *TINY]
    main(args)
    first = json.loads(next((tmp_path / "sine").glob("maml-*/summary.json")).read_text())
    main(args)
    again = json.loads(next((tmp_path / "sine").glob("maml-*/summary.json")).read_text())
    assert first == again
    assert len(pd.read_csv(tmp_path / "sine" / "runs.csv")) == 1


def test_run_omniglot_minimal_on_the_real_data(tmp_path, omniglot_root, capsys):
    code = main(["run", str(ROOT / "configs/omniglot_minimal.yaml"), "--results-dir", str(tmp_path),
                 "--set", f"data_root={omniglot_root}", "--set", "algorithm=maml", "--set", "meta_batch_size=2", *TINY])
    assert code == 0
    summary = json.loads(next((tmp_path / "omniglot_minimal").glob("maml-*/summary.json")).read_text())
    assert 0.0 <= summary["test_accuracy_mean"] <= 1.0 and summary["ways"] == 5 and summary["shots"] == 1
    assert "test accuracy" in capsys.readouterr().out


def test_missing_data_says_where_it_looked_and_how_to_get_it(tmp_path, capsys):
    code = main(["run", str(ROOT / "configs/omniglot_minimal.yaml"), "--results-dir", str(tmp_path),
                 "--set", f"data_root={tmp_path / 'nowhere'}", *TINY])
    err = capsys.readouterr().err
    assert code == 2
    assert str(tmp_path / "nowhere" / "images_background_small1.zip") in err
    assert "metacompare download omniglot" in err and "Traceback" not in err
