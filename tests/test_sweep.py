"""Sweeps: grid expansion, a real parallel sweep, resuming, failures, the lock and the Ray executor."""

from __future__ import annotations

import csv
import re
import importlib.util
from pathlib import Path

import pytest
import yaml

from metacompare.cli import main
from metacompare.config.loading import ConfigError
from metacompare.errors import UserError
from metacompare.workflows.executors import experiment_lock
from metacompare.workflows.sweep import expand_sweep, grid_points, load_sweep, run_sweep

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
TINY = dict(dataset="sine", shots=5, query=5, iterations=5, eval_interval=5, eval_episodes=5, test_episodes=5,
            meta_batch_size=4, inner_steps=1)


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_grid_points_is_the_cartesian_product_and_a_list_of_grids_their_union():
    assert grid_points({"a": [1, 2], "b.c": ["x", "y", "z"]}) == [
        {"a": a, "b.c": c} for a in (1, 2) for c in ("x", "y", "z")]
    assert grid_points([{"a": [1]}, {"a": [2, 3]}]) == [{"a": 1}, {"a": 2}, {"a": 3}]
    with pytest.raises(ConfigError, match=r"grid.inner_lr: expected a non-empty list"):
        grid_points({"inner_lr": 0.1})


def test_expand_sweep_counts_dotted_keys_points_and_per_algorithm():
    base = {**TINY, "algorithm": ["maml", "reptile"], "inner_lr": 0.01,
            "per_algorithm": {"reptile": {"inner_lr": 0.02, "inner_steps": 3}}}
    spec = {"experiment": "grid", "base": base,
            "grid": {"seed": [0, 1], "omniglot.rotations": [True, False]},
            "points": [{"algorithm": "fomaml", "seed": 7}, {"algorithm": "maml", "seed": 0,
                                                            "omniglot.rotations": True}]}  # a duplicate
    configs = expand_sweep(spec)
    assert len(configs) == 2 * 2 * 2 + 1
    assert len({c.run_id() for c in configs}) == len(configs)
    assert {c.experiment for c in configs} == {"grid"}
    assert sorted((c.algorithm, c.seed, c.omniglot.rotations) for c in configs if c.algorithm == "maml") == [
        ("maml", 0, False), ("maml", 0, True), ("maml", 1, False), ("maml", 1, True)]
    reptile = [c for c in configs if c.algorithm == "reptile"]
    assert {(c.inner_lr, c.inner_steps) for c in reptile} == {(0.02, 3)}  # per_algorithm follows the algorithm
    assert [(c.seed, c.inner_lr) for c in configs if c.algorithm == "fomaml"] == [(7, 0.01)]

    swept = expand_sweep({"base": base, "grid": {"inner_lr": [0.5]}}, overrides=["inner_steps=2"])
    assert {(c.algorithm, c.inner_lr, c.inner_steps) for c in swept} == {("maml", 0.5, 2), ("reptile", 0.5, 2)}


def test_set_edits_the_base_and_per_algorithm_wins_over_it():
    base = {**TINY, "algorithm": ["maml", "reptile"], "per_algorithm": {"reptile": {"inner_steps": 3}}}
    spec = {"base": base, "set": {"iterations": 7, "inner_steps": 2, "omniglot.image_size": 14},
            "per_algorithm": {"reptile": {"meta_batch_size": 2}, "maml": {"outer_lr": 0.5}}}
    got = {c.algorithm: (c.iterations, c.inner_steps, c.meta_batch_size, c.outer_lr, c.omniglot.image_size)
           for c in expand_sweep(spec)}
    assert got == {"maml": (7, 2, 4, 0.5, 14), "reptile": (7, 3, 2, 0.001, 14)}
    assert base["per_algorithm"] == {"reptile": {"inner_steps": 3}}  # the caller's mapping is untouched


@pytest.mark.parametrize("spec,message", [
    ({"base": TINY, "grid": {"inner_lrr": [0.1]}}, "unknown field 'inner_lrr'"),
    ({"base": TINY, "grid": {"experiment": ["a", "b"]}}, "'experiment' cannot vary"),
    ({"base": TINY, "grids": {"seed": [1]}}, "unknown key"),
    ({"base": TINY, "points": [{"ways": 0}]}, "ways: must be a positive"),
    ({"base": 3}, "base must be a config file path"),
])
def test_bad_sweep_files_are_refused_with_the_field_named(spec, message):
    with pytest.raises(ConfigError, match=message):
        expand_sweep(spec)


def test_sweep_files_resolve_base_relative_to_themselves(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "b.yaml").write_text(yaml.safe_dump({**TINY, "algorithm": ["maml", "fomaml"]}))
    (tmp_path / "sweeps").mkdir()
    path = tmp_path / "sweeps" / "s.yaml"
    path.write_text(yaml.safe_dump({"base": "../configs/b.yaml", "grid": {"num_tasks": [10, -1]}}))
    configs = load_sweep(path, ["iterations=2"], results_dir=str(tmp_path / "out"))
    assert len(configs) == 4 and {c.iterations for c in configs} == {2}
    assert {c.experiment for c in configs} == {"s"}  # the file's name when it sets none
    assert {c.results_dir for c in configs} == {str(tmp_path / "out")}


def test_a_real_sweep_records_every_outcome_and_a_rerun_skips_the_finished(tmp_path, capsys):
    """Two workers: 2 good runs, 1 that diverges, 1 that raises; then the same command again."""
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(yaml.safe_dump({
        "experiment": "tiny", "base": {**TINY, "algorithm": "fomaml"},
        "grid": {"seed": [0, 1]},
        "points": [{"outer_optimizer": "sgd", "outer_lr": 1e12},  # diverges at iteration 2
                   {"dataset": "omniglot", "model": "conv4", "ways": 5, "shots": 1,  # no data there: raises
                    "data_root": str(tmp_path / "nowhere"), "omniglot.download": False}]}))
    argv = ["sweep", str(sweep), "--workers", "2", "--results-dir", str(tmp_path), "--no-progress"]
    assert main(argv) == 1  # a run failed
    out = capsys.readouterr().out
    assert "4 runs: 1 diverged, 1 failed, 2 finished" in out
    rows = read_rows(tmp_path / "tiny" / "runs.csv")
    assert sorted(r["status"] for r in rows) == ["diverged", "failed", "finished", "finished"]
    failed = next(r for r in rows if r["status"] == "failed")
    assert "DataError" in failed["error"] and "nowhere" in failed["error"] and failed["dataset"] == "omniglot"
    assert (tmp_path / "tiny" / failed["run_id"] / "error.txt").is_file()
    assert next(r for r in rows if r["status"] == "diverged")["diverged_at"] == "2"
    finished = sorted((r["run_id"], float(r["test_loss_mean"])) for r in rows if r["status"] == "finished")
    assert all(loss > 0 for _, loss in finished)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "tiny").glob("*/summary.json")}
    assert len(stamps) == 3

    assert main(argv) == 1  # the failed run is tried again (and fails again); nothing else reruns
    assert "3 of 4 runs already finished; running the other 1" in capsys.readouterr().out
    again = read_rows(tmp_path / "tiny" / "runs.csv")
    assert sorted(r["run_id"] for r in again) == sorted(r["run_id"] for r in rows)  # no doubled rows
    assert sorted((r["run_id"], float(r["test_loss_mean"])) for r in again if r["status"] == "finished") == finished
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_a_second_sweep_on_the_same_results_is_refused(tmp_path):
    configs = expand_sweep({"experiment": "locked", "base": {**TINY, "results_dir": str(tmp_path)}})
    with experiment_lock(tmp_path / "locked"):
        with pytest.raises(UserError, match="another sweep is running on this results folder"):
            run_sweep(configs, workers=1, progress=False)
    assert not (tmp_path / "locked" / "runs.csv").exists()


@pytest.mark.parametrize("name", ["sine_task_counts", "sine_baselines", "sine_sensitivity",
                                  "omniglot_task_counts", "omniglot_baselines", "omniglot_sensitivity"])
def test_experiment_files_parse(name):
    """Each study file expands to distinct runs of its own experiment covering the three meta-learners
    (and, for baselines, both baselines), every run bounded by the same budget within its file."""
    configs = load_sweep(EXPERIMENTS / f"{name}.yaml")
    assert {c.experiment for c in configs} == {name}
    assert len({c.run_id() for c in configs}) == len(configs)
    algorithms = {c.algorithm for c in configs}
    assert {"reptile", "fomaml", "maml"} <= algorithms
    if name.endswith("baselines"):
        assert {"pretrain", "scratch"} <= algorithms
    trained = {c.budget for c in configs if c.algorithm != "scratch"}
    assert len(trained) == 1 and next(iter(trained)).cpu_seconds  # one CPU-second budget for all


@pytest.mark.slow  # starts a Ray instance (GCS, raylet, workers): ~15 s on an idle 2-core machine
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (pip install ray)")
def test_ray_executor_gives_the_local_executor_table(tmp_path):
    """Same runs as Ray tasks on a local instance at 127.0.0.1: the same run ids and the same numbers."""
    import ray

    spec = {"experiment": "same", "base": {**TINY, "algorithm": ["fomaml", "reptile"]}}
    local = expand_sweep(spec, overrides=[f"results_dir={tmp_path / 'local'}"])
    remote = expand_sweep(spec, overrides=[f"results_dir={tmp_path / 'ray'}"])
    run_sweep(local, workers=2, progress=False)
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)
    try:
        run_sweep(remote, executor="ray", progress=False)
    finally:
        ray.shutdown()
    columns = ["run_id", "algorithm", "status", "iterations_done", "test_loss_mean", "test_loss_ci95"]
    tables = [sorted(tuple(r[c] for c in columns) for r in read_rows(tmp_path / where / "same" / "runs.csv"))
              for where in ("local", "ray")]
    assert len(tables[0]) == 2 and tables[0] == tables[1]


def test_ray_executor_without_ray_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # makes `import ray` fail
    configs = expand_sweep({"experiment": "noray", "base": {**TINY, "results_dir": str(tmp_path)}})
    with pytest.raises(UserError, match=r"pip install 'metacompare\[ray\]'"):
        run_sweep(configs, executor="ray", progress=False)


@pytest.mark.parametrize("spec", [{"grid": {"data_root": ["a", "b"]}},
                                  {"grid": {"seed": [1]}, "points": [{"seed": 1, "data_root": "elsewhere"}]}])
def test_a_grid_over_a_field_outside_the_run_identity_is_refused(spec):
    """Such values would give one run id (one folder), so all but one would silently not run
    (``device``, the other such field, is refused the same way where a GPU is visible)."""
    with pytest.raises(ConfigError, match="data_root cannot vary within a sweep: not part of a run's identity"):
        expand_sweep({"base": TINY, **spec})
    assert len(expand_sweep({"base": TINY, "grid": {"data_root": ["a"]}})) == 1


@pytest.mark.parametrize("text,needle", [
    ("base: {dataset: sine}\ngrid:\n  seed: [0]\n  seed: [1]\n", "line 4, column 3: field 'seed' is set twice"),
    ("base: {dataset: sine}\nbase: {dataset: sine}\n", "field 'base' is set twice"),
    ("base: {dataset: sine}\ngrid: {1: [2]}\n", "key 1 is not a name"),
    ("", "is empty"),
    ("- base\n", "got a list"),
])
def test_sweep_files_are_read_strictly(tmp_path, text, needle):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=needle):
        load_sweep(path)


@pytest.mark.parametrize("content,needle", [
    (b"dataset: sine\ndataset: sine\n", "field 'dataset' is set twice"),
    (b"\xff\xfe", "is not UTF-8"), (b"", "is empty"), (None, "is a folder"), (b"[1]", "got a list"),
])
def test_a_broken_base_config_names_itself(tmp_path, content, needle):
    base = tmp_path / "b.yaml"
    base.mkdir() if content is None else base.write_bytes(content)
    (tmp_path / "s.yaml").write_text("base: b.yaml\n")
    with pytest.raises(UserError, match=needle) as caught:
        load_sweep(tmp_path / "s.yaml")
    assert "b.yaml" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("values,example", [([], "inner_lr: [a, b]"), (0.1, "inner_lr: [0.1]")])
def test_a_grid_entry_that_is_not_a_list_of_values_shows_one(values, example):
    with pytest.raises(ConfigError, match=rf"grid.inner_lr: expected a non-empty list of values, e.g. {re.escape(example)}$"):
        grid_points({"inner_lr": values}, "grid")
