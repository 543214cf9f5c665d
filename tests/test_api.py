"""The Python API (metacompare.api): the same runs, files and errors as the command line, returned as
paths, dicts and DataFrames; its names on the package, loaded lazily."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import yaml

import metacompare
from metacompare import api
from metacompare.errors import ConfigError, DataError, UserError
from metacompare.config.runconfig import RunConfig
from tests.test_tune import TINY, one_thread  # noqa: F401 (autouse fixture)
from tests.test_user_data import make_folder


def tiny_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "results_dir": str(tmp_path / "results")}))
    return path


def test_the_package_offers_the_api_names_without_importing_torch_until_used():
    assert set(metacompare.__all__) == set(api.__all__)
    for name in metacompare.__all__:
        assert getattr(metacompare, name) is getattr(api, name)
    assert metacompare.compare is api.compare  # the function; the module is metacompare.workflows.compare
    code = "import sys, metacompare; assert 'torch' not in sys.modules; metacompare.run; assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        metacompare.nothing  # noqa: B018


def test_settings_are_the_set_strings_of_the_command_line(tmp_path):
    """A dict of dotted fields reads as ``--set`` would: numbers, lists, strings and nested fields."""
    settings = {"algorithm": ["maml", "reptile"], "inner_lr": 0.05, "iterations": 7, "model": "mlp",
                "budget.work": 1000}
    by_dict = api.load_config(tiny_config(tmp_path), settings)
    by_strings = api.load_config(tiny_config(tmp_path), [f"{k}={v}" for k, v in
                                                         (("algorithm", "[maml, reptile]"), ("inner_lr", 0.05),
                                                          ("iterations", 7), ("model", "mlp"), ("budget.work", 1000))])
    assert by_dict == by_strings
    assert [(c.algorithm, c.inner_lr, c.iterations, c.budget.work) for c in by_dict] == [
        ("maml", 0.05, 7, 1000), ("reptile", 0.05, 7, 1000)]


def test_bad_input_raises_the_projects_errors_naming_the_fix(tmp_path):
    with pytest.raises(UserError, match="not one string"):
        api.load_config(tiny_config(tmp_path), "iterations=3")
    with pytest.raises(ConfigError, match="inner_lr"):
        api.load_config(tiny_config(tmp_path), {"inner_lr": "fast"})
    with pytest.raises(ConfigError, match="no such config file"):
        api.run(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="inner_optimizer: naive_reptile runs the sample loop's own inner loop"):
        api.run(RunConfig(algorithm="seed_reptile", inner_optimizer="adam", results_dir=str(tmp_path)))  # built in code
    with pytest.raises(UserError, match="one of them"):
        api.compare(tiny_config(tmp_path), budget="work:600", data=tmp_path)
    with pytest.raises(UserError, match="one of them"):
        api.compare(budget="work:600")
    with pytest.raises(UserError, match="--budget"):
        api.compare(tiny_config(tmp_path), budget="flops:1")
    with pytest.raises(UserError, match="no algorithms.csv"):
        api.load_comparison(tmp_path)
    with pytest.raises(UserError, match="no runs.csv"):
        api.load_results(tmp_path)
    with pytest.raises(DataError, match="too few for 6-way"):
        api.inspect(make_folder(tmp_path / "images", classes=10, per_class=3), ways=6)
    with pytest.raises(ConfigError, match="expected a file path, a mapping of fields, a RunConfig or a list"):
        api.run(["configs/sine.yaml"])
    with pytest.raises(ConfigError, match="config: expected a file path or a mapping of fields, got int"):
        api.load_config(3)


def test_a_config_may_be_the_mapping_a_file_holds(tmp_path):
    """A notebook writes the config as a dict: the same checked configs as the file, the same run."""
    raw = {**TINY, "results_dir": str(tmp_path / "results")}
    assert api.load_config(raw, {"iterations": 2}) == api.load_config(tiny_config(tmp_path), {"iterations": 2})
    with pytest.raises(ConfigError, match="unknown field 'itertions'"):
        api.load_config({**raw, "itertions": 2})
    (summary,) = api.run({**raw, "algorithm": "fomaml"}, {"iterations": 2}, report=False)
    assert summary["status"] == "finished" and summary["iterations_done"] == 2


def test_run_trains_reads_back_and_loads_the_results(tmp_path):
    configs = api.load_config(tiny_config(tmp_path), {"algorithm": "fomaml"})
    summaries = api.run(configs, {"iterations": 2}, report=False)
    (summary,) = summaries
    assert summary["status"] == "finished" and summary["iterations_done"] == 2
    experiment_dir = tmp_path / "results" / "tiny"
    metrics = experiment_dir / summary["run_id"] / "metrics.csv"
    written = metrics.stat().st_mtime_ns
    (again,) = api.run(configs, {"iterations": 2}, report=False)  # finished: read back, not trained again
    assert (again["run_id"], again["test_loss_mean"]) == (summary["run_id"], summary["test_loss_mean"])
    assert metrics.stat().st_mtime_ns == written
    experiment = api.load_results(experiment_dir)
    assert experiment.runs["run_id"].tolist() == [summary["run_id"]]
    assert experiment.groups.loc[0, "score_mean"] == pytest.approx(summary["test_loss_mean"])
    assert api.write_report(experiment.directory).read_text().startswith("# Report: tiny")


def test_compare_returns_the_tables_it_wrote(tmp_path):
    result = api.compare(tiny_config(tmp_path), budget="work:600", tune=False, seeds=2)
    assert result.report == tmp_path / "results" / "tiny_compare_work600" / "compare" / "report.md"
    assert result.answer.startswith("**Answer: ") and result.answer in result.report.read_text()
    pd.testing.assert_frame_equal(result.algorithms, pd.read_csv(result.folder / "algorithms.csv"))
    assert sorted(result.algorithms["algorithm"]) == ["fomaml", "reptile"]
    assert (result.pairs["over"] == "episode").all() and (result.seed_pairs["n"] == 2).all()
    again = api.load_comparison(result.folder.parent)
    assert again.answer == result.answer and again.pairs.equals(result.pairs)
    written = {p.name: p.read_bytes() for p in result.folder.iterdir()}
    api.compare(tiny_config(tmp_path), budget="work:600", tune=False, seeds=2)  # finished: nothing to train
    assert {p.name: p.read_bytes() for p in result.folder.iterdir()} == written  # and no file changes
