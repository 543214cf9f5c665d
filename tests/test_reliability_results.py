"""Results that cannot be silently wrong: one test per class of failure (docs/reliability.md).

Each test names the class it guards. Data is a tiny table written here (12 classes x 4 rows of random
numbers) or the sine waves, and every run trains for one or two iterations.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from metacompare.workflows import compare, tune

from metacompare import files

from metacompare.storage import provenance, results
from metacompare.config.loading import ConfigError, expand
from metacompare.errors import UserError
from tests.faults import cli, one_torch_thread
from tests.report_runs import add_run
from tests.test_tune import TINY, write

one_thread = pytest.fixture(autouse=True)(one_torch_thread)

RUN = ["--ways", "2", "--set", "iterations=1", "--set", "test_episodes=2", "--set", "eval_episodes=1",
       "--set", "eval_interval=1", "--no-progress", "--no-report"]


def table(path: Path, seed: int = 0, classes: int = 12) -> Path:
    """A small CSV table: ``classes`` classes of 4 rows, 4 random features."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(classes * 4, 4)), columns=[f"x{i}" for i in range(4)])
    frame["label"] = [f"c{c}" for c in range(classes) for _ in range(4)]
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def one_line_error(capsys, *argv) -> str:
    code, out, err = cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("metacompare: error: "), (code, out, err)
    return lines[0]


def run_folders(results_dir: Path, algorithm: str) -> list[Path]:
    return sorted(results_dir.glob(f"*/{algorithm}-*"))


# ---------------------------------------------- class 1: a finished run is trusted without asking
def test_finished_run_is_not_trusted_when_its_data_changed_class(tmp_path, capsys):
    """Class: a finished run is trusted without asking whether it still answers the question. A rerun
    of finished runs after the data changed is refused in one line (what changed, the fix), and the
    fix it suggests (a new experiment name) is itself accepted."""
    data, out = table(tmp_path / "d" / "shapes.csv"), tmp_path / "r"
    argv = ["run", "--data", data, *RUN, "--set", "algorithm=fomaml", "--results-dir", out]
    code, first, err = cli(capsys, *argv)
    assert code == 0, err
    code, again, err = cli(capsys, *argv)  # unchanged data: the finished run is the answer
    assert code == 0 and again.splitlines()[-1] == first.splitlines()[-1], err
    table(data, seed=1)  # same name and shape, other values
    line = one_line_error(capsys, *argv)
    assert "not the data the finished run" in line and "--set experiment=NAME" in line, line
    code, _, err = cli(capsys, *argv, "--set", "experiment=shapes_v2")  # the suggested fix is accepted
    assert code == 0, err


def test_two_data_folders_under_one_experiment_name_are_not_reported_as_each_other_class(tmp_path, capsys):
    """Class: a finished run is trusted without asking. Two different tables with one name (so one
    experiment name) must not get the first table's results as the second's; the report too
    refuses an experiment whose data changed under it."""
    out = tmp_path / "r"
    first, second = table(tmp_path / "a" / "shapes.csv"), table(tmp_path / "b" / "shapes.csv", seed=5)
    code, _, err = cli(capsys, "run", "--data", first, *RUN, "--set", "algorithm=fomaml", "--results-dir", out)
    assert code == 0, err
    line = one_line_error(capsys, "run", "--data", second, *RUN, "--set", "algorithm=fomaml", "--results-dir", out)
    assert str(second) in line and "digest" in line, line
    experiment = run_folders(out, "fomaml")[0].parent
    os.utime(first, (1, 1))  # the first table changes under its finished run: its report is refused
    line = one_line_error(capsys, "report", experiment, "--no-progress")
    assert str(first) in line and "changed since run" in line, line


def test_a_summary_written_for_other_settings_is_not_handed_back_class(tmp_path):
    """Class: a finished run is trusted without asking. A summary.json whose config is not the run's
    (copied or hand-edited) is refused when read back, naming the fields."""
    from metacompare.training.runner import run_dir, train_and_evaluate

    cfg = expand({**TINY, "algorithm": "fomaml", "results_dir": str(tmp_path)})[0]
    train_and_evaluate(cfg, progress=False)
    path = run_dir(cfg) / "summary.json"
    summary = json.loads(path.read_text())
    summary["config"]["eval_seed"] = 7
    path.write_text(json.dumps(summary))
    with pytest.raises(UserError, match="written for other settings.*eval_seed"):
        train_and_evaluate(cfg, progress=False)


# ---------------------------------------------- class 2: settings from a file break the same episodes
def chosen_file(tmp_path: Path, settings: dict) -> Path:
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump({"trials_per_algorithm": 1, "chosen": settings}))
    return path


@pytest.mark.parametrize("setting,field", [({"eval_seed": 7}, "eval_seed"), ({"test_query": 3}, "test_query"),
                                           ({"test_episodes": 2}, "test_episodes")])
def test_settings_from_a_file_cannot_break_the_same_episodes_class(tmp_path, capsys, setting, field):
    """Class: settings taken from a file can break the 'same episodes' promise. A --chosen record that
    gives one algorithm other test episodes is refused before anything trains, naming the field and
    the algorithm."""
    config = write(tmp_path)
    record = chosen_file(tmp_path, {"fomaml": {"inner_lr": 0.01}, "reptile": {"inner_lr": 0.01, **setting}})
    line = one_line_error(capsys, "compare", config, "--budget", "work:100", "--chosen", record,
                          "--results-dir", tmp_path / "r", "--no-progress")
    assert "reptile" in line and field in line and "other episodes" in line, line
    assert not list((tmp_path / "r").rglob("summary.json")) and not list((tmp_path / "r").rglob("checkpoint.pt"))


def test_per_algorithm_settings_and_tune_spaces_cannot_break_the_same_episodes_class(tmp_path):
    """Class: settings taken from a file can break the same episodes. The config's per-algorithm
    settings and a tune space over a field that fixes the episodes are refused when loaded."""
    with pytest.raises(ConfigError, match="reptile .* other episodes.*eval_seed"):
        tune.load(write(tmp_path, per_algorithm={"reptile": {"eval_seed": 3}}))
    with pytest.raises(ConfigError, match="tune.space.test_query.*test_query"):
        tune.load(write(tmp_path, {"space": {"test_query": {"choice": [2, 4]}}}))


def test_the_episode_identity_is_exactly_what_draws_the_test_episodes_class():
    """Class: same episodes. The fields compared are the ones that change the drawn test tasks:
    changing one of them changes the episodes, changing a training setting does not."""
    from metacompare.data import build_tasks

    base = dict(TINY, algorithm="fomaml")

    def episodes(**change):
        cfg = expand({**base, **change})[0]
        return cfg, [t.query_x for t in build_tasks(cfg).test]

    cfg, reference = episodes()
    for change, same in (({"inner_lr": 0.3, "seed": 4, "train_shots": 3, "meta_batch_size": 1}, True),
                         ({"query": 9, "test_query": 5}, True),  # the test query is still 5
                         ({"eval_seed": 1}, False), ({"query": 3}, False), ({"shots": 4}, False),
                         ({"test_episodes": 2}, False)):
        other, drawn = episodes(**change)
        identical = len(drawn) == len(reference) and all(a.shape == b.shape and bool((a == b).all())
                                                         for a, b in zip(drawn, reference))
        assert identical == same, change
        assert (provenance.episode_difference(provenance.episode_identity(cfg.to_dict()),
                                              provenance.episode_identity(other.to_dict())) == "") == same, change


def test_the_report_does_not_pair_runs_tested_on_other_episodes_class(tmp_path):
    """Class: same episodes. The report's paired statistics refuse to pair per episode two runs whose
    episodes differ (here 2-way against 3-way), and say why."""
    from metacompare.report.experiment import analyse
    from metacompare.report.figures import pairwise

    exp = tmp_path / "omni"
    for algorithm, ways in (("maml", 2), ("reptile", 3)):
        cfg = add_run(exp, algorithm=algorithm, ways=ways, accuracy=0.5, test_episodes=4)
        results.write_csv(exp / cfg.run_id() / "episodes.csv",
                          [{"episode": i, "test_accuracy": 0.5 + 0.1 * i} for i in range(4)])
    analysed = analyse(exp)
    assert "over" not in pairwise.data(analysed) or "episode" not in set(pairwise.data(analysed)["over"])
    text = pairwise.section(analysed).sentence
    assert "Not paired over test episodes" in text and "ways 3 against 2" in text, text


# ---------------------------------------------- class 3: per-run files read around the checked reader
def test_per_run_files_are_read_only_through_the_checked_reader_class(tmp_path):
    """Class: per-run CSV files read around the project's one checked reader. A truncated
    episodes.csv (cut mid-row, or at a line end) is named, never paired on fewer episodes, in compare
    and in the report; a damaged metrics.csv is named too. And no module reads them another way."""
    from metacompare.report.experiment import analyse

    exp = tmp_path / "omni"
    cfgs = [add_run(exp, algorithm=a, accuracy=0.5, test_episodes=4, curve=[(10, 0.4)]) for a in ("maml", "reptile")]
    for cfg in cfgs:
        results.write_csv(exp / cfg.run_id() / "episodes.csv", [{"episode": i, "test_accuracy": 0.5} for i in range(4)])
    path = exp / cfgs[1].run_id() / "episodes.csv"
    whole = path.read_text()
    path.write_text(whole[: whole.rindex("\n", 0, len(whole) - 1) + 1])  # the last row gone
    with pytest.raises(files.FileProblem, match="holds 3 rows where the run wrote 4"):
        compare.episode_scores([dataclasses.replace(cfg, results_dir=str(tmp_path)) for cfg in cfgs], "test_accuracy")
    analysed = analyse(exp)
    assert set(analysed.episodes["run_id"]) == {cfgs[0].run_id()}
    assert any("holds 3 rows where the run wrote 4" in note for note in analysed.notes), analysed.notes
    path.write_text(whole[: whole.rindex(",")])  # cut inside the last row
    with pytest.raises(files.FileProblem, match="line 5 has 1 values"):
        results.read_episodes(path.parent, 4)
    metrics = exp / cfgs[0].run_id() / "metrics.csv"
    metrics.write_text(metrics.read_text().replace("0.4", "0.4x"))
    with pytest.raises(files.FileProblem, match="metrics.csv: column 'val_accuracy_mean' holds '0.4x'"):
        analyse(exp)
    package = Path(provenance.__file__).parents[1]  # metacompare/
    raw = ("pd.read_csv(", "pandas.read_csv(", "csv.reader(", "csv.DictReader(")  # around files.read_*
    readers = [str(p.relative_to(package)) for p in package.rglob("*.py")
               if any(r in p.read_text() for r in raw) and p.name not in ("files.py", "results.py")]
    assert sorted(readers) == ["data/table.py"], readers  # the user's own tables


# ---------------------------------------------- class 4: one damaged runs.csv stops the other reports
def test_a_duplicated_runs_row_refuses_that_experiment_only_class(tmp_path, capsys):
    """Class: one duplicated row in runs.csv crashes `report` and stops the experiments beside it.
    That experiment is refused in one line naming both lines; the others are reported; the exit
    status says one failed; the fix it suggests (delete one row) is accepted."""
    for name in ("good", "bad"):
        add_run(tmp_path / name, experiment=name, algorithm="maml", accuracy=0.6, curve=[(10, 0.5)])
    table_path = tmp_path / "bad" / "runs.csv"
    lines = table_path.read_text().splitlines(keepends=True)
    table_path.write_text("".join(lines + lines[1:]))
    code, out, err = cli(capsys, "report", tmp_path, "--no-progress")
    assert code == 2 and "report: " + str(tmp_path / "good" / "report") in out, (out, err)
    assert err.count("\n") == 1 and "lines 2 and 3 both hold run" in err and "delete one of them" in err, err
    table_path.write_text("".join(lines))
    code, out, err = cli(capsys, "report", tmp_path / "bad", "--no-progress")
    assert code == 0, err


# ---------------------------------------------- class 5: minor
def test_a_refused_run_leaves_no_empty_run_folder_class(tmp_path, capsys):
    """Class (minor): a refused run leaves an empty run folder behind."""
    data, out = table(tmp_path / "d" / "t.csv"), tmp_path / "r"
    code, _, err = cli(capsys, "run", "--data", data, *RUN, "--set", "algorithm=fomaml", "--results-dir", out)
    assert code == 0, err
    table(data, seed=2)
    one_line_error(capsys, "run", "--data", data, *RUN, "--set", "algorithm=maml", "--results-dir", out)
    assert run_folders(out, "maml") == []


def test_an_interrupted_compare_says_how_many_finished_runs_are_kept_class(tmp_path, capsys, monkeypatch):
    """Class (minor): compare's interrupt message said nothing finished when finished runs were kept."""
    real, calls = compare.train, []

    def stopped_on_the_second(cfg, procs=1, progress=True):
        calls.append(cfg)
        if len(calls) == 2:
            raise KeyboardInterrupt("signal 2")
        return real(cfg, procs, progress)

    monkeypatch.setattr(compare, "train", stopped_on_the_second)
    code, _, err = cli(capsys, "compare", write(tmp_path), "--budget", "work:200", "--no-tune", "--seeds", "1",
                       "--results-dir", tmp_path / "r", "--no-progress")
    assert code == 130 and "1 of 2 final runs finished and are kept" in err and "nothing" not in err, err


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomically_written_results_honour_the_umask_class(tmp_path, umask, mode):
    """Class (minor): atomically written results got mode 0600 while the others are 0644."""
    previous = os.umask(umask)
    try:
        results.atomic_write(tmp_path / "new.json", "{}")
        (tmp_path / "kept.json").write_text("")
        os.chmod(tmp_path / "kept.json", 0o640)
        results.atomic_write(tmp_path / "kept.json", "{}")  # an existing file keeps its own mode
    finally:
        os.umask(previous)
    assert (tmp_path / "new.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / "kept.json").stat().st_mode & 0o777 == 0o640


def test_every_command_that_writes_a_results_folder_takes_its_lock_class(tmp_path):
    """Class (minor): two `compare` commands on one results folder were not refused (sweep refused).
    compare, tune and sweep take one lock per results folder; the second is refused naming the first."""
    from metacompare.workflows.sweep import expand_sweep, run_sweep

    config = write(tmp_path)
    folder = tmp_path / "results" / "tiny_compare_work100"
    with results.experiment_lock(folder, "compare"):
        with pytest.raises(UserError, match="another compare is running on this results folder"):
            compare.compare(config, "work:100", tuned=False, seeds=1, progress=False)
        sweep = expand_sweep({"experiment": folder.name, "base": {**TINY, "algorithm": "fomaml",
                                                                   "results_dir": str(folder.parent)}})
        with pytest.raises(UserError, match="another compare is running"):
            run_sweep(sweep, workers=1, progress=False)
    with results.experiment_lock(tmp_path / "results" / "tiny", "sweep"):
        with pytest.raises(UserError, match="another sweep is running"):
            tune.run_tune(write(tmp_path, {"trials": 1, "seeds": 1}), progress=False)
    assert not list(tmp_path.rglob("summary.json"))


def test_a_run_another_process_is_training_waits_for_it_then_reads_it_class(tmp_path, capsys):
    """Class (still short): single `run` commands took no lock, so two of them on one config both trained
    the run and wrote its checkpoint. The process training a run holds a lock on its folder; a second
    command says it waits, and goes on once the first has ended (here a process holding the lock for
    two seconds, as a training run would), before writing anything."""
    import subprocess
    import sys
    import time

    from metacompare.config.loading import load_experiment
    from metacompare.training.runner import run_dir

    config = write(tmp_path, algorithm="fomaml")
    folder = run_dir(load_experiment(config)[0])
    folder.mkdir(parents=True)
    released = tmp_path / "released"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX); "
        "open(sys.argv[2] + '.held', 'w').close(); time.sleep(2); open(sys.argv[2], 'w').write(repr(time.time()))"),
        str(folder), str(released)])
    while not Path(f"{released}.held").exists():
        time.sleep(0.05)
    code, _, err = cli(capsys, "run", config, "--no-progress", "--no-report")
    holder.wait(timeout=60)
    assert code == 0 and "another process is training this run; waiting for it to end" in err, err
    assert (folder / "config.yaml").stat().st_mtime >= float(released.read_text())  # nothing written before
    assert (folder / "summary.json").exists()


def test_a_run_refused_for_its_data_leaves_no_new_results_folder_at_any_depth_class(tmp_path, capsys):
    """Class (minor): only the run folder and its parent were removed after a refusal; a results
    folder given deeper than that (here three new levels) was left behind, empty. The data is refused
    when the run is built, after its folder was claimed."""
    from tests.faults import omniglot_config

    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(omniglot_config(tmp_path / "nowhere")))
    line = one_line_error(capsys, "run", config, "--results-dir", tmp_path / "new" / "deeper" / "r",
                          "--no-progress", "--no-report")
    assert "nowhere" in line and not (tmp_path / "new").exists()


def test_a_metrics_file_cut_at_a_line_end_is_named_class(tmp_path, capsys):
    """Class (still short): a metrics.csv that lost its last rows exactly at a line end read as a shorter
    curve. A finished run's summary keeps how many rows it wrote; reading and reporting refuse fewer."""
    from metacompare.config.loading import load_experiment
    from metacompare.report.experiment import analyse
    from metacompare.training.runner import run_dir

    config = write(tmp_path, algorithm="fomaml")
    code, _, err = cli(capsys, "run", config, "--no-progress", "--no-report")
    assert code == 0, err
    folder = run_dir(load_experiment(config)[0])
    wrote = json.loads((folder / "summary.json").read_text())["metrics_rows"]
    assert wrote == len(results.read_metrics(folder)) == 2  # iterations 4, a validation every 2
    metrics = folder / "metrics.csv"
    whole = metrics.read_text()
    metrics.write_text(whole[: whole.rindex("\n", 0, len(whole) - 1) + 1])
    with pytest.raises(files.FileProblem, match="metrics.csv: holds 1 rows where the run wrote 2"):
        results.read_metrics(folder)
    with pytest.raises(files.FileProblem, match="holds 1 rows where the run wrote 2"):
        analyse(folder.parent)
