"""Reading an experiment folder: ``runs.csv``, each run's ``config.yaml``, ``metrics.csv``,
``summary.json`` and (when the run wrote one) ``episodes.csv``, into pandas DataFrames.

A failed run may have no files, a diverged run no test score, an older run no per-episode scores:
each is read as far as it goes. A damaged file is never read around: the tables go through the
checked readers (:mod:`metacompare.storage.results`), so a damaged ``episodes.csv`` is left out of the paired
statistics with a note, and a damaged ``runs.csv`` or ``metrics.csv``, or data changed since the runs
answered for it, refuses this experiment's report in one line (``report`` still reports the others).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from metacompare import files

from metacompare.storage import provenance, results
from metacompare.config.loading import RunConfig
from metacompare.errors import UserError
from metacompare.report.metric import Metric, num

EPISODES_FILE = results.EPISODES_FILE
CURVE_COLUMNS = ["run_id", "iteration", "wall_time_s", "mean", "ci95"]
STEP_COLUMNS = ["run_id", "steps", "mean", "ci95"]
EPISODE_COLUMNS = ["run_id", "algorithm", "seed", "episode", "score", "episodes_key"]


def config_fields() -> list[str]:
    """Flat names of every config field (``omniglot.rotations``), from the current schema."""
    return list(flatten(RunConfig().to_dict()))


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value) if isinstance(value, list) else value
    return flat


def load_runs(experiment_dir: Path) -> pd.DataFrame:
    """One row per run: ``runs.csv`` plus config fields it lacks, read from each run's config.yaml."""
    experiment_dir = Path(experiment_dir)
    table = experiment_dir / "runs.csv"
    if not table.is_file():
        raise UserError(f"{experiment_dir}: no runs.csv here; give an experiment folder such as "
                        f"results/sine (made by `metacompare run` or `sweep`)")
    runs = results.read_runs_frame(experiment_dir)  # checked: a damaged or doubled row refuses this experiment
    missing = sorted({"run_id", "algorithm", "status", "dataset"} - set(runs.columns))
    if missing:
        raise UserError(f"{table}: lacks the column(s) {', '.join(missing)}; restore it or rerun the experiment")
    if runs.empty:
        raise UserError(f"{table}: holds no runs yet; run an experiment first")
    extra = pd.DataFrame([_run_config(experiment_dir / str(run_id)) for run_id in runs["run_id"]], index=runs.index)
    defaults = flatten(RunConfig().to_dict())
    for column in extra.columns:
        if column not in runs.columns:
            # a field added to the schema after a run was made: that run had the default behaviour
            runs[column] = extra[column].where(extra[column].notna(), defaults.get(column))
    runs["status"] = runs["status"].fillna("failed").astype(str)
    for column in ("test_accuracy_mean", "test_accuracy_ci95", "test_loss_mean", "test_loss_ci95",
                   "seconds_per_iteration", "peak_memory_mb", "seed"):
        runs[column] = pd.to_numeric(runs[column], errors="coerce") if column in runs else np.nan
    digests: dict[tuple[str, str], str] = {}  # each data root indexed once
    runs["episodes_key"] = [_episodes_key(experiment_dir / str(run_id), digests) for run_id in runs["run_id"]]
    return runs


def _episodes_key(run_folder: Path, digests: dict[tuple[str, str], str]) -> str:
    """The run's test episodes as one comparable text (:func:`provenance.episode_identity`), after
    checking that the data it answered for is still the data at its root: a changed folder or table
    refuses the experiment's report instead of reporting old answers as the data's."""
    summary = _summary(run_folder)
    config = summary.get("config") if isinstance(summary.get("config"), dict) else _config_yaml(run_folder)
    if not config or summary.get("status") != "finished":
        return ""
    data = provenance.recorded_data(summary, run_folder) if provenance.digested(config.get("dataset")) else None
    if data is not None and Path(str(data["root"])).exists():
        where = (config["dataset"], str(data["root"]))
        now = digests[where] = digests.get(where) or provenance.data_digest(*where)
        if now != data["digest"]:
            raise UserError(f"{data['root']}: changed since run {run_folder.name} answered for it (digest "
                            f"{data['digest'][:12]} -> {now[:12]}); restore it, or rerun the experiment on the "
                            f"new data under a new name (--set experiment=NAME)")
    return json.dumps(provenance.episode_identity(config, data and data["digest"]), sort_keys=True, default=str)


def _run_config(run_dir: Path) -> dict[str, Any]:
    """A run's resolved config, flattened; empty when absent or broken (runs.csv holds the main fields)."""
    return flatten(_config_yaml(run_dir))


def _config_yaml(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    try:
        values = yaml.safe_load(path.read_text()) if path.is_file() else {}
    except (yaml.YAMLError, UnicodeDecodeError):
        return {}
    return values if isinstance(values, dict) else {}


def load_curves(experiment_dir: Path, run_ids: list[str], metric: Metric) -> pd.DataFrame:
    """Validation score per evaluation of every run (``metrics.csv``), in the metric's units."""
    mean_col, ci_col = f"{metric.val_column}_mean", f"{metric.val_column}_ci95"
    frames = []
    for run_id in run_ids:
        frame = results.read_metrics(Path(experiment_dir) / run_id)  # checked: a damaged file is named
        if frame is None or frame.empty or mean_col not in frame or not np.isfinite(frame[mean_col]).any():
            continue
        frame = frame.drop_duplicates("iteration", keep="last")
        frames.append(pd.DataFrame({
            "run_id": run_id, "iteration": frame["iteration"].to_numpy(),
            "wall_time_s": frame["wall_time_s"].to_numpy(float), "mean": frame[mean_col].to_numpy(float) * metric.scale,
            "ci95": (frame[ci_col].to_numpy(float) if ci_col in frame else np.nan) * metric.scale}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CURVE_COLUMNS)


def load_steps(experiment_dir: Path, run_ids: list[str], metric: Metric) -> pd.DataFrame:
    """Each run's test score after each number of adaptation steps (``test_by_inner_steps`` in summary.json)."""
    key = metric.column.removeprefix("test_")  # "loss" or "accuracy"
    rows = []
    for run_id in run_ids:
        for steps, scores in (_summary(Path(experiment_dir) / run_id).get("test_by_inner_steps") or {}).items():
            mean, ci = num(scores.get(f"{key}_mean")), num(scores.get(f"{key}_ci95"))
            if math.isfinite(mean):
                rows.append({"run_id": run_id, "steps": int(steps), "mean": mean * metric.scale,
                             "ci95": ci * metric.scale})
    return pd.DataFrame(rows, columns=STEP_COLUMNS)


def _summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "summary.json"
    try:
        summary = json.loads(path.read_text()) if path.is_file() else {}
    except (ValueError, UnicodeDecodeError):
        return {}
    return summary if isinstance(summary, dict) else {}


def load_episodes(experiment_dir: Path, runs: pd.DataFrame, metric: Metric) -> tuple[pd.DataFrame, list[str]]:
    """Per-episode test scores from each finished run's ``episodes.csv`` (the runner writes columns
    ``episode``, ``test_accuracy``, ``test_loss`` and more; a bare ``accuracy`` / ``loss`` is read too).

    Returns:
        The scores (columns ``EPISODE_COLUMNS``, in the metric's units) and one note per file that
        could not be used. Runs without the file are simply absent: older runs did not write it.
    """
    frames, notes = [], []
    for run in runs[runs["status"] == "finished"].itertuples():
        expected = getattr(run, "test_episodes", None)
        try:  # the checked reader: a file cut short or damaged is named here, never paired on fewer episodes
            frame = results.read_episodes(Path(experiment_dir) / str(run.run_id),
                                          int(expected) if expected == expected and expected is not None else None)
        except files.FileProblem as err:
            reason = str(err).split("; ")[0].split(": ", 1)[-1]
            notes.append(f"{run.run_id}/{EPISODES_FILE} is unreadable ({reason}); left out.")
            continue
        if frame is None:
            continue
        column = _score_column(frame, metric)
        if column is None:
            notes.append(f"{run.run_id}/{EPISODES_FILE} is unreadable (lacks the column {metric.column}); left out.")
            continue
        frames.append(pd.DataFrame({"run_id": run.run_id, "algorithm": run.algorithm, "seed": run.seed,
                                    "episode": frame["episode"], "score": frame[column] * metric.scale,
                                    "episodes_key": run.episodes_key}).dropna())
    scores = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=EPISODE_COLUMNS)
    return scores, notes


def _score_column(frame: pd.DataFrame | None, metric: Metric) -> str | None:
    """The column of ``episodes.csv`` holding the metric: ``test_accuracy`` (or plain ``accuracy``)."""
    if frame is None or "episode" not in frame.columns:
        return None
    return next((c for c in (metric.column, metric.column.removeprefix("test_")) if c in frame.columns), None)
