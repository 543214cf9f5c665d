"""Experiment tracking: every run logs to TensorBoard in its run folder, optionally to MLflow too.

``tracker: tensorboard`` (the default) writes event files into ``<results_dir>/<experiment>/<run_id>/``
with ``torch.utils.tensorboard.SummaryWriter``: training loss/accuracy at every meta-iteration,
validation score with its 95% interval (``*_lower``/``*_upper``, drawn as one band by the Custom
Scalars dashboard), wall seconds and peak memory at every validation, and at the end the test scores
and the run's hyperparameters through TensorBoard's hparams plugin. So ``tensorboard --logdir results/``
shows every run of every sweep side by side, and its HParams tab tabulates them.

``tracker: mlflow`` also logs the same to MLflow (``pip install mlflow-skinny``): parameters, metrics by
step, ``summary.json`` and ``environment.txt`` as artifacts, one MLflow run per metacompare run in an
MLflow experiment named like ours. ``tracking_uri`` picks the server; empty means the local file store
``<results_dir>/mlruns``. ``tracker: none`` logs nothing.
"""

from __future__ import annotations

import math
import os
import warnings
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable
from urllib.parse import unquote, urlparse

from metacompare.errors import UserError

if TYPE_CHECKING:
    from metacompare.config.runconfig import RunConfig

TRACKERS = {  # the `tracker` config field: name -> what it logs
    "tensorboard": "event files in each run folder: `tensorboard --logdir results/` (the default)",
    "mlflow": "TensorBoard plus an MLflow run (tracking_uri; default <results_dir>/mlruns), mlflow-skinny",
    "none": "no tracking files",
}
RUN_TAG = "metacompare.run_id"  # MLflow tag naming the metacompare run, so a resumed run finds its MLflow run
TRAIN_POINTS = 1000  # training-loss points logged per run, at most about
NOT_HPARAMS = ("results_dir", "data_root", "experiment", "tracker", "tracking_uri")  # where, not what


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, str | int | float | bool]:
    """Nested config to ``{"omniglot.rotations": True, ...}`` with scalar values (lists and None as text),
    the value types TensorBoard's hparams plugin and MLflow params accept."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{prefix}{key}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[f"{prefix}{key}"] = value
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


def _finite(scalars: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in scalars.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def validation_scalars(row: dict[str, Any], peak_memory_mb: float) -> dict[str, float]:
    """Tags for one validation row of ``metrics.csv``: mean, 95% half-width and band of each score."""
    scalars = {"time/wall_seconds": row.get("wall_time_s"), "memory/peak_mb": peak_memory_mb}
    for name in ("loss", "accuracy"):
        mean, half = row.get(f"val_{name}_mean"), row.get(f"val_{name}_ci95")
        scalars[f"validation/{name}"] = mean
        scalars[f"validation/{name}_ci95"] = half
        if isinstance(mean, float) and isinstance(half, float):
            scalars[f"validation/{name}_lower"], scalars[f"validation/{name}_upper"] = mean - half, mean + half
    return _finite(scalars)


def final_scalars(summary: dict[str, Any]) -> dict[str, float]:
    """Tags for a finished run: test scores (also after each ``test_inner_steps``) and its cost."""
    scalars = {"test/loss": summary.get("test_loss_mean"), "test/loss_ci95": summary.get("test_loss_ci95"),
               "test/accuracy": summary.get("test_accuracy_mean"),
               "test/accuracy_ci95": summary.get("test_accuracy_ci95"),
               "cost/seconds_per_iteration": summary.get("seconds_per_iteration"),
               "cost/wall_seconds": summary.get("wall_time_s"), "cost/peak_memory_mb": summary.get("peak_memory_mb")}
    for steps, scores in (summary.get("test_by_inner_steps") or {}).items():
        scalars[f"test/loss_after_{steps}_steps"] = scores.get("loss_mean")
        scalars[f"test/accuracy_after_{steps}_steps"] = scores.get("accuracy_mean")
    return _finite(scalars)


class Tracker:
    """The hooks the runner calls; this base class logs nothing (``tracker: none``)."""

    def train(self, step: int, metrics: dict[str, float]) -> None:
        """After each meta-iteration: its training loss (and accuracy)."""

    def validation(self, step: int, row: dict[str, Any], peak_memory_mb: float) -> None:
        """After each validation: the row written to ``metrics.csv`` and the peak memory so far."""

    def finish(self, summary: dict[str, Any]) -> None:
        """Once, with the run's summary (test scores, cost, status); then the tracker is closed."""

    def close(self, error: BaseException | None = None) -> None:
        """End without a summary: the run was interrupted (``KeyboardInterrupt``) or failed."""


class TensorBoardTracker(Tracker):
    """Event files in the run folder (``torch.utils.tensorboard``); see the module docstring."""

    def __init__(self, cfg: RunConfig, run_dir: Path, start_iteration: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.config = cfg.to_dict()
        # about 1000 training points per run, what TensorBoard keeps when it loads scalars anyway;
        # committed result folders stay small for 70,000-iteration runs
        self.every, self.last = max(1, cfg.iterations // TRAIN_POINTS), cfg.iterations
        if start_iteration == 0:  # a run from scratch (or --force) starts its event files afresh
            for old in Path(run_dir).glob("events.out.tfevents.*"):
                old.unlink()
        # purge_step: TensorBoard drops events a killed process logged after its last checkpoint
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=start_iteration or None)
        if start_iteration == 0:
            self.writer.add_custom_scalars({"validation (95% CI band)": {
                name: ["Margin", [f"validation/{name}", f"validation/{name}_lower", f"validation/{name}_upper"]]
                for name in ("loss", "accuracy")}})

    def train(self, step: int, metrics: dict[str, float]) -> None:
        if step % self.every and step != self.last:
            return
        for key, value in _finite(metrics).items():
            self.writer.add_scalar(f"train/{key}", value, step)

    def validation(self, step: int, row: dict[str, Any], peak_memory_mb: float) -> None:
        for tag, value in validation_scalars(row, peak_memory_mb).items():
            self.writer.add_scalar(tag, value, step)

    def finish(self, summary: dict[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        step = summary.get("iterations_done", 0)
        scalars = final_scalars(summary)
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)
        # booleans as text: torch's hparams() would store them as the numbers 0 and 1
        values = {k: str(v) if isinstance(v, bool) else v for k, v in flat_config(self.config).items()
                  if k not in NOT_HPARAMS}
        values["status"] = str(summary.get("status"))
        # Only the session records: without an experiment record of its own, each run's hparams are
        # merged with every other run's under a common logdir (a per-run experiment record would make
        # TensorBoard show the columns of one arbitrary run only).
        _, start, end = hparams(values, scalars)
        self.writer.file_writer.add_summary(start, step)
        self.writer.file_writer.add_summary(end, step)
        self.writer.close()

    def close(self, error: BaseException | None = None) -> None:
        self.writer.close()


class MlflowTracker(Tracker):
    """One MLflow run per metacompare run, through ``MlflowClient``; see the module docstring."""

    def __init__(self, cfg: RunConfig, run_dir: Path, start_iteration: int = 0) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise UserError("tracker: mlflow needs MLflow: pip install 'metacompare[mlflow]' (mlflow-skinny), "
                            "or set tracker: tensorboard") from None
        uri = tracking_uri(cfg)
        self.client, self.run_dir = MlflowClient(tracking_uri=uri), Path(run_dir)
        experiment_id = self._experiment(cfg.experiment, uri)
        self.id = self._unfinished(experiment_id, cfg.run_id()) if start_iteration else None
        if self.id is None:
            from metacompare.storage.provenance import tree_state

            tags = {RUN_TAG: cfg.run_id(), "mlflow.source.git.commit": tree_state().label()}
            self.id = self.client.create_run(experiment_id, run_name=cfg.run_id(), tags=tags).info.run_id
            self._log(params=flat_config(cfg.to_dict()))

    def _experiment(self, name: str, uri: str) -> str:
        from mlflow.exceptions import MlflowException

        store = _local_store(uri)
        if store is not None:  # sweep workers share one file store: create the experiment once
            from metacompare.storage.results import locked

            with locked(store / ".metacompare.lock"):
                found = self.client.get_experiment_by_name(name)
                return found.experiment_id if found else self.client.create_experiment(name)
        found = self.client.get_experiment_by_name(name)
        if found:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:  # created meanwhile by another worker
            return self.client.get_experiment_by_name(name).experiment_id

    def _unfinished(self, experiment_id: str, run_id: str) -> str | None:
        """The MLflow run of an interrupted metacompare run, which a resumed run continues."""
        runs = self.client.search_runs([experiment_id], filter_string=f"tags.`{RUN_TAG}` = '{run_id}'",
                                       order_by=["attributes.start_time DESC"], max_results=1)
        return runs[0].info.run_id if runs and runs[0].info.status != "FINISHED" else None

    def _log(self, step: int = 0, metrics: dict[str, float] | None = None,
             params: dict[str, Any] | None = None) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        self.client.log_batch(self.id, metrics=[Metric(k, v, now, step) for k, v in (metrics or {}).items()],
                              params=[Param(k, str(v)) for k, v in (params or {}).items()])

    def validation(self, step: int, row: dict[str, Any], peak_memory_mb: float) -> None:
        train = {f"train/{k.removeprefix('train_')}": row.get(k) for k in ("train_loss", "train_accuracy")}
        self._log(step, {**_finite(train), **validation_scalars(row, peak_memory_mb)})

    def finish(self, summary: dict[str, Any]) -> None:
        self._log(summary.get("iterations_done", 0), final_scalars(summary))
        self.client.set_tag(self.id, "metacompare.status", str(summary.get("status")))
        self.client.log_dict(self.id, summary, "summary.json")
        if (self.run_dir / "environment.txt").is_file():
            self.client.log_artifact(self.id, str(self.run_dir / "environment.txt"))
        self.client.set_terminated(self.id, "FINISHED")

    def close(self, error: BaseException | None = None) -> None:
        self.client.set_terminated(self.id, "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")


class Trackers(Tracker):
    """Several trackers behind one set of hooks."""

    def __init__(self, trackers: Iterable[Tracker]) -> None:
        self.trackers = list(trackers)

    def train(self, step: int, metrics: dict[str, float]) -> None:
        for t in self.trackers:
            t.train(step, metrics)

    def validation(self, step: int, row: dict[str, Any], peak_memory_mb: float) -> None:
        for t in self.trackers:
            t.validation(step, row, peak_memory_mb)

    def finish(self, summary: dict[str, Any]) -> None:
        for t in self.trackers:
            t.finish(summary)

    def close(self, error: BaseException | None = None) -> None:
        for t in self.trackers:
            try:
                t.close(error)
            except Exception as failure:  # an unreachable MLflow server must not hide the run's own error
                warnings.warn(f"tracker {type(t).__name__} could not close: {failure}", stacklevel=2)


def tracking_uri(cfg: RunConfig) -> str:
    """``cfg.tracking_uri``, or the file store ``<results_dir>/mlruns``.

    MLflow 3 keeps its file store in maintenance mode behind ``MLFLOW_ALLOW_FILE_STORE``; metacompare
    opts in for local stores, because mlflow-skinny has no SQL store and a folder needs no server.
    """
    uri = cfg.tracking_uri or (Path(cfg.results_dir) / "mlruns").resolve().as_uri()
    if _local_store(uri) is not None:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


def _local_store(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    return Path(uri) if parsed.scheme == "" else None


def open_tracker(cfg: RunConfig, run_dir: Path, start_iteration: int = 0) -> Tracker:
    """The trackers ``cfg.tracker`` asks for (``mlflow`` logs to TensorBoard as well)."""
    if cfg.tracker == "none":
        return Tracker()
    trackers: list[Tracker] = [TensorBoardTracker(cfg, run_dir, start_iteration)]
    if cfg.tracker == "mlflow":
        trackers.append(MlflowTracker(cfg, run_dir, start_iteration))
    return Trackers(trackers)
