"""Tracking: what a tiny sine run and a tiny sine sweep log, read back with TensorBoard's and MLflow's own readers."""

from __future__ import annotations

import json
import math
import os
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams import metadata as hparams_metadata

from metacompare.storage import tracking
from metacompare.cli import main
from metacompare.config.loading import ConfigError, RunConfig, load_experiment, with_overrides

ROOT = Path(__file__).resolve().parents[1]
SINE = str(ROOT / "configs/sine.yaml")
TINY = ["--set", "iterations=4", "--set", "eval_interval=2", "--set", "eval_episodes=3", "--set", "test_episodes=5",
        "--set", "meta_batch_size=4", "--no-progress", "--no-report"]


def mlflow_client(uri: str):
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 gates its file store (tracking.tracking_uri)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def hparams_table(logdir: Path, runs: int) -> list[dict]:
    """The HParams dashboard's rows, from a real TensorBoard server on ``logdir`` (in this process)."""
    from tensorboard import program

    board = program.TensorBoard()
    board.configure(argv=[None, "--logdir", str(logdir), "--port", "0", "--host", "127.0.0.1", "--load_fast", "false"])
    url = board.launch() + "data/plugin/hparams/session_groups"
    query = {"experimentName": "", "allowedStatuses": ["STATUS_SUCCESS"], "colParams": [], "startIndex": 0,
             "sliceSize": 100}
    request = urllib.request.Request(url, json.dumps(query).encode(),
                                     {"Content-Type": "application/json", "X-XSRF-Protected": "1"})
    for _ in range(60):  # the server loads event files in the background
        groups = json.load(urllib.request.urlopen(request, timeout=10))["sessionGroups"]
        if len(groups) >= runs:
            return groups
        time.sleep(0.5)
    return groups


def scalars(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def session_hparams(acc: EventAccumulator) -> dict:
    content = acc.PluginTagToContent(hparams_metadata.PLUGIN_NAME)[hparams_metadata.SESSION_START_INFO_TAG]
    info = hparams_metadata.parse_session_start_info_plugin_data(content)
    return {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in info.hparams.items()}


def test_a_sine_run_writes_tensorboard_scalars_and_hparams_equal_to_its_files(tmp_path):
    assert main(["run", SINE, "--results-dir", str(tmp_path), "--set", "algorithm=maml", *TINY]) == 0
    (run,) = (tmp_path / "sine").glob("maml-*")
    metrics = pd.read_csv(run / "metrics.csv")
    summary = json.loads((run / "summary.json").read_text())
    acc = EventAccumulator(str(run))
    acc.Reload()

    assert [s for s, _ in scalars(acc, "train/loss")] == [1, 2, 3, 4]  # every meta-iteration
    assert scalars(acc, "train/loss")[-1][1] == pytest.approx(metrics.train_loss.iloc[-1], rel=1e-6)
    val = scalars(acc, "validation/loss")
    assert [s for s, _ in val] == [2, 4] == list(metrics.iteration)
    assert [v for _, v in val] == pytest.approx(list(metrics.val_loss_mean), rel=1e-6)
    lower, upper = scalars(acc, "validation/loss_lower"), scalars(acc, "validation/loss_upper")
    for (_, lo), (_, hi), mean, half in zip(lower, upper, metrics.val_loss_mean, metrics.val_loss_ci95):
        assert (lo, hi) == pytest.approx((mean - half, mean + half), rel=1e-6)
    assert "validation/accuracy" not in acc.Tags()["scalars"]  # regression: NaN accuracies are not logged
    wall = [v for _, v in scalars(acc, "time/wall_seconds")]
    assert wall == pytest.approx(list(metrics.wall_time_s), rel=1e-6) and wall[0] < wall[1]
    assert all(v > 0 for _, v in scalars(acc, "memory/peak_mb"))

    assert scalars(acc, "test/loss") == [(4, pytest.approx(summary["test_loss_mean"], rel=1e-6))]
    assert scalars(acc, "cost/seconds_per_iteration")[0][1] == pytest.approx(summary["seconds_per_iteration"], rel=1e-6)
    hp = session_hparams(acc)
    assert hp["algorithm"] == "maml" and hp["status"] == "finished"
    assert hp["inner_lr"] == pytest.approx(0.01) and hp["iterations"] == 4 and hp["omniglot.rotations"] == "True"
    assert "results_dir" not in hp  # where files go is not a hyperparameter
    assert "custom_scalars__config__" in acc.Tags()["tensors"]  # the validation band layout


def test_a_rerun_from_scratch_replaces_the_old_event_files(tmp_path):
    args = ["run", SINE, "--results-dir", str(tmp_path), "--set", "algorithm=fomaml", *TINY]
    assert main(args) == 0
    assert main([*args, "--force"]) == 0
    (run,) = (tmp_path / "sine").glob("fomaml-*")
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    acc = EventAccumulator(str(run))
    acc.Reload()
    assert [s for s, _ in scalars(acc, "validation/loss")] == [2, 4]


def test_tracker_none_writes_no_event_files_and_tracker_fields_leave_run_ids_alone(tmp_path):
    assert main(["run", SINE, "--results-dir", str(tmp_path), "--set", "algorithm=maml", "--set", "tracker=none",
                 *TINY]) == 0
    (run,) = (tmp_path / "sine").glob("maml-*")
    assert (run / "summary.json").is_file() and not list(run.glob("events.out.tfevents.*"))
    assert RunConfig(tracker="mlflow", tracking_uri="http://x").run_id() == RunConfig().run_id()
    with pytest.raises(ConfigError, match=r"tracker: unknown 'mlfow' \(did you mean 'mlflow'\?\)"):
        with_overrides(RunConfig(), tracker="mlfow")


def test_a_sine_run_logs_to_mlflow_at_the_configured_uri(tmp_path):
    store = tmp_path / "elsewhere" / "store"
    assert main(["run", SINE, "--results-dir", str(tmp_path / "res"), "--set", "algorithm=maml",
                 "--set", "tracker=mlflow", "--set", f"tracking_uri={store.as_uri()}", *TINY]) == 0
    assert not (tmp_path / "res" / "mlruns").exists()
    (run_dir,) = (tmp_path / "res" / "sine").glob("maml-*")
    summary = json.loads((run_dir / "summary.json").read_text())
    client = mlflow_client(store.as_uri())
    experiment = client.get_experiment_by_name("sine")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == summary["run_id"] and run.info.status == "FINISHED"
    assert run.data.tags[tracking.RUN_TAG] == summary["run_id"]
    assert run.data.tags["mlflow.source.git.commit"] == summary["git_commit"]
    assert run.data.params["inner_lr"] == "0.01" and run.data.params["algorithm"] == "maml"
    assert run.data.metrics["test/loss"] == pytest.approx(summary["test_loss_mean"])
    history = client.get_metric_history(run.info.run_id, "validation/loss")
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert [m.step for m in history] == list(metrics.iteration)
    assert [m.value for m in history] == pytest.approx(list(metrics.val_loss_mean))
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"summary.json", "environment.txt"}
    assert list(run_dir.glob("events.out.tfevents.*"))  # mlflow logs TensorBoard as well


def test_an_interrupted_mlflow_run_is_continued_on_resume(tmp_path):
    cfg = with_overrides(load_experiment(SINE, ["algorithm=maml"])[0], results_dir=str(tmp_path), tracker="mlflow")
    first = tracking.MlflowTracker(cfg, tmp_path / "run")
    first.validation(2, {"val_loss_mean": 1.5, "val_loss_ci95": 0.5, "wall_time_s": 1.0}, 10.0)
    first.close(KeyboardInterrupt())
    client = mlflow_client(tracking.tracking_uri(cfg))
    assert client.get_run(first.id).info.status == "KILLED"
    resumed = tracking.MlflowTracker(cfg, tmp_path / "run", start_iteration=2)
    assert resumed.id == first.id
    fresh = tracking.MlflowTracker(cfg, tmp_path / "run", start_iteration=0)
    assert fresh.id != first.id
    metrics = client.get_run(first.id).data.metrics
    assert metrics["validation/loss_lower"] == 1.0 and metrics["validation/loss_upper"] == 2.0


def test_a_sine_sweep_shows_every_run_side_by_side_in_tensorboard_and_mlflow(tmp_path):
    base = {"dataset": "sine", "shots": 5, "query": 5, "iterations": 4, "eval_interval": 2, "eval_episodes": 3,
            "test_episodes": 5, "meta_batch_size": 4, "tracker": "mlflow"}
    sweep = tmp_path / "tracked.yaml"
    sweep.write_text(yaml.safe_dump({"experiment": "tracked", "base": base,
                                     "points": [{"algorithm": "maml", "inner_lr": 0.02}, {"algorithm": "reptile"}]}))
    assert main(["sweep", str(sweep), "--workers", "2", "--results-dir", str(tmp_path / "results"),
                 "--no-progress", "--no-report"]) == 0
    table = pd.read_csv(tmp_path / "results" / "tracked" / "runs.csv").set_index("run_id")
    assert sorted(zip(table.algorithm, table.inner_lr)) == [("maml", 0.02), ("reptile", 0.01)]

    # what `tensorboard --logdir results/` loads: one TensorBoard run per metacompare run
    multiplexer = EventMultiplexer().AddRunsFromDirectory(str(tmp_path / "results"))
    multiplexer.Reload()
    runs = {Path(name).name: name for name in multiplexer.Runs()}
    assert set(runs) == set(table.index)
    for run_id, name in runs.items():
        (event,) = multiplexer.Scalars(name, "test/loss")
        assert event.value == pytest.approx(table.at[run_id, "test_loss_mean"], rel=1e-6)
        acc = multiplexer.GetAccumulator(name)
        hp = session_hparams(acc)
        assert (hp["algorithm"], hp["inner_lr"]) == (table.at[run_id, "algorithm"],
                                                     pytest.approx(table.at[run_id, "inner_lr"]))

    rows = {Path(g["name"]).name: g for g in hparams_table(tmp_path / "results", len(table))}  # the HParams tab
    assert set(rows) == set(table.index)
    for run_id, row in rows.items():
        assert row["hparams"]["algorithm"] == table.at[run_id, "algorithm"]
        test_loss = {m["name"]["tag"]: m["value"] for m in row["metricValues"]}["test/loss"]
        assert test_loss == pytest.approx(table.at[run_id, "test_loss_mean"], rel=1e-6)

    client = mlflow_client((tmp_path / "results" / "mlruns").as_uri())
    logged = client.search_runs([client.get_experiment_by_name("tracked").experiment_id])
    assert sorted(r.info.run_name for r in logged) == sorted(table.index)
    for r in logged:
        assert r.info.status == "FINISHED"
        assert float(r.data.params["inner_lr"]) == table.at[r.info.run_name, "inner_lr"]
        assert r.data.metrics["test/loss"] == pytest.approx(table.at[r.info.run_name, "test_loss_mean"])
        assert math.isfinite(r.data.metrics["cost/seconds_per_iteration"])


def test_flat_config_and_final_scalars_by_hand():
    assert tracking.flat_config({"a": 1, "b": {"c": [1, 2], "d": None}, "e": True}) == {
        "a": 1, "b.c": "[1, 2]", "b.d": "None", "e": True}
    summary = {"test_loss_mean": 2.0, "test_loss_ci95": 0.5, "test_accuracy_mean": math.nan,
               "seconds_per_iteration": 0.1, "test_by_inner_steps": {1: {"loss_mean": 3.0, "accuracy_mean": math.nan}}}
    assert tracking.final_scalars(summary) == {"test/loss": 2.0, "test/loss_ci95": 0.5,
                                               "cost/seconds_per_iteration": 0.1, "test/loss_after_1_steps": 3.0}
    row = {"val_accuracy_mean": 0.6, "val_accuracy_ci95": 0.1, "wall_time_s": 3.0}
    assert tracking.validation_scalars(row, 12.0) == pytest.approx({
        "time/wall_seconds": 3.0, "memory/peak_mb": 12.0, "validation/accuracy": 0.6,
        "validation/accuracy_ci95": 0.1, "validation/accuracy_lower": 0.5, "validation/accuracy_upper": 0.7})


def test_long_runs_log_about_a_thousand_training_points(tmp_path):
    cfg = with_overrides(RunConfig(), iterations=5000)  # every 5th iteration, and the last
    tracker = tracking.TensorBoardTracker(cfg, tmp_path)
    for step in [*range(1, 13), 4999, 5000]:
        tracker.train(step, {"loss": float(step), "accuracy": math.nan})
    tracker.close()
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert scalars(acc, "train/loss") == [(5, 5.0), (10, 10.0), (5000, 5000.0)]
    assert "train/accuracy" not in acc.Tags()["scalars"]
