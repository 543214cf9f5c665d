"""Provenance: the commit and installed versions in every run folder, and no recorded study from a dirty tree."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metacompare.storage import provenance
from metacompare.cli import main
from metacompare.errors import UserError
from metacompare.storage import gitstate

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "algorithm=maml", "--set", "iterations=2", "--set", "eval_interval=2", "--set", "eval_episodes=2",
        "--set", "test_episodes=3", "--set", "meta_batch_size=2", "--set", "tracker=none", "--no-progress"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git work tree laid out like metacompare's: code in pkg/, committed results in results/."""
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    (root / "results" / "old").mkdir(parents=True)
    (root / "pkg" / "code.py").write_text("x = 1\n")
    (root / "results" / "old" / "runs.csv").write_text("run_id\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-qm", "start")
    return root


def test_tree_state_counts_code_changes_but_not_results_or_untracked_files(repo):
    head = git(repo, "rev-parse", "HEAD")
    clean = provenance.tree_state(repo / "pkg")
    assert (clean.root, clean.commit, clean.changed, clean.label()) == (repo, head, (), head)
    (repo / "results" / "old" / "runs.csv").write_text("run_id\nmaml-1\n")  # a sweep rewriting its table
    (repo / "pkg" / "scratch.txt").write_text("untracked\n")
    assert not provenance.tree_state(repo / "pkg").dirty
    (repo / "pkg" / "code.py").write_text("x = 2\n")
    dirty = provenance.tree_state(repo / "pkg")
    assert dirty.changed == ("pkg/code.py",) and dirty.label() == head + "+dirty"
    outside = provenance.tree_state(repo.parent)  # not a git work tree
    assert (outside.commit, outside.label(), outside.dirty) == (None, "unknown", False)


def test_environment_txt_lists_what_pip_freeze_lists(tmp_path):
    fields = provenance.record(tmp_path, provenance.TreeState(None, None))
    assert fields == {"git_commit": "unknown", "dirty": False, "environment": "environment.txt"}
    lines = (tmp_path / "environment.txt").read_text().splitlines()
    assert lines[0].startswith(f"# python {sys.version.split()[0]}")
    packages = [line for line in lines if not line.startswith("#")]
    assert f"torch=={importlib.metadata.version('torch')}" in packages
    assert all(line.count("==") == 1 for line in packages)
    names = [line.split("==")[0].lower().replace("_", "-") for line in packages]
    assert names == sorted(set(names))  # sorted, one line per distribution
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all"], capture_output=True, text=True,
                            check=True).stdout.splitlines()
    ours = {line.lower().replace("_", "-") for line in packages}
    pinned = [line.lower().replace("_", "-") for line in frozen if "==" in line and not line.startswith("#")]
    assert pinned and not [line for line in pinned if line not in ours]


def test_guard_refuses_a_dirty_tree_only_for_the_work_trees_results(repo, tmp_path, capsys):
    (repo / "pkg" / "code.py").write_text("x = 2\n")
    state = provenance.tree_state(repo / "pkg")
    with pytest.raises(UserError, match=r"results/sine: refusing to record results from a source tree with "
                                        r"uncommitted changes \(pkg/code.py\); commit them first.*--allow-dirty"):
        provenance.guard([repo / "results" / "sine"], state=state)
    provenance.guard([tmp_path / "scratch" / "sine"], state=state)  # a test or scratch folder: allowed
    assert capsys.readouterr().err == ""
    provenance.guard([repo / "results" / "sine"], allow_dirty=True, state=state)
    assert "WARNING: recording into" in capsys.readouterr().err
    git(repo, "commit", "-qam", "code change")
    provenance.guard([repo / "results" / "sine"], state=provenance.tree_state(repo / "pkg"))  # clean: allowed


def test_record_marks_a_dirty_run(repo, tmp_path):
    (repo / "pkg" / "code.py").write_text("x = 2\n")
    fields = provenance.record(tmp_path, provenance.tree_state(repo / "pkg"))
    assert fields["dirty"] is True and fields["git_commit"].endswith("+dirty")
    assert fields["dirty_files"] == ["pkg/code.py"] and "uncommitted changes (1 file: pkg/code.py)" in fields["warning"]


def test_report_warning_counts_dirty_runs():
    assert provenance.report_warning(["abc", "abc"]) == ""
    assert provenance.report_warning(["abc", "abc+dirty", float("nan")]).startswith("WARNING: 1 of 3 runs")


def test_the_cli_refuses_then_with_allow_dirty_records_and_marks_a_dirty_run(repo, monkeypatch, capsys):
    monkeypatch.setattr(gitstate, "SOURCE", repo / "pkg")  # as if metacompare's code lived in this tree
    (repo / "pkg" / "code.py").write_text("x = 2\n")
    args = ["run", str(ROOT / "configs/sine.yaml"), "--results-dir", str(repo / "results"), *TINY]
    assert main(args) == 2
    assert "refusing to record results" in capsys.readouterr().err
    assert not (repo / "results" / "sine").exists()  # nothing written

    assert main([*args, "--allow-dirty"]) == 0
    assert "WARNING" in capsys.readouterr().err
    (run,) = (repo / "results" / "sine").glob("maml-*")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["dirty"] is True and summary["git_commit"] == git(repo, "rev-parse", "HEAD") + "+dirty"
    assert summary["dirty_files"] == ["pkg/code.py"] and "cannot be traced" in summary["warning"]
    assert "torch==" in (run / "environment.txt").read_text()
    report = (repo / "results" / "sine" / "report" / "report.md").read_text()
    assert "WARNING: 1 of 1 runs were made from a source tree with uncommitted changes" in report

    git(repo, "commit", "-qam", "code change")
    assert main([*args, "--force"]) == 0  # committed code: no flag needed
    summary = json.loads((run / "summary.json").read_text())
    assert summary["dirty"] is False and summary["git_commit"] == git(repo, "rev-parse", "HEAD")
    assert "WARNING" not in (repo / "results" / "sine" / "report" / "report.md").read_text()


RECORDING = {"tune": ["tune", str(ROOT / "experiments/compare_sine.yaml")],
             "compare": ["compare", str(ROOT / "experiments/compare_sine.yaml"), "--budget", "work:1e4"],
             "sweep": ["sweep", str(ROOT / "experiments/sine_task_counts.yaml"), "--workers", "1"],
             "bench": ["bench", "--quick", "--models", "conv4_strided", "--steps", "1", "--repeats", "1"]}


@pytest.mark.parametrize("command", sorted(RECORDING))
def test_every_command_that_records_results_refuses_a_dirty_tree_before_training(command, repo, monkeypatch,
                                                                                   capsys):
    """The guard sits in the write path (results.check_writable) that every recording command passes,
    so tune and compare, which once skipped it, refuse like run: one line, exit 2, nothing trained."""
    monkeypatch.setattr(gitstate, "SOURCE", repo / "pkg")
    (repo / "pkg" / "code.py").write_text("x = 2\n")
    where = ["--out", str(repo / "results" / "bench")] if command == "bench" else ["--results-dir", str(repo / "results")]
    assert main([*RECORDING[command], *where, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "refusing to record results from a source tree with uncommitted changes (pkg/code.py)" in err
    assert err.count("metacompare: error:") == 1 and "--allow-dirty" in err
    assert f"write elsewhere with {where[0]}," in err  # the option that chose the folder
    written = [p for p in (repo / "results").rglob("*") if p.is_file() and p.parent.name != "old"]
    assert written == []  # no trial, run or race began


def test_allowing_a_dirty_tree_reaches_the_worker_processes(repo, monkeypatch, capsys):
    """--allow-dirty is carried by the environment, so that the guard of a worker process (sweep, tune,
    compare, run --procs) allows what its command allowed; outside the command it is refused again."""
    monkeypatch.setattr(gitstate, "SOURCE", repo / "pkg")
    (repo / "pkg" / "code.py").write_text("x = 2\n")
    target = repo / "results" / "sine"
    with provenance.dirty_allowed(True):
        assert os.environ[gitstate.ALLOW_DIRTY] == "1"
        provenance.guard([target])  # allowed, with a warning
    assert gitstate.ALLOW_DIRTY not in os.environ and "WARNING: recording into" in capsys.readouterr().err
    with pytest.raises(UserError, match="refusing to record"):
        provenance.guard([target])
    monkeypatch.setenv(gitstate.ALLOW_DIRTY, "1")  # set by the user (or inherited by a worker)
    with provenance.dirty_allowed(False):
        provenance.guard([target])
    assert os.environ[gitstate.ALLOW_DIRTY] == "1"
