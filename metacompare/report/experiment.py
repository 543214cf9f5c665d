"""An experiment as the report sees it: its runs, its settings (groups of seeds) and their scores.

A *setting* is a combination of the config fields that vary across the experiment's runs (the seed
aside); its score is the mean over its seeds of each run's mean over test episodes, with a 95% CI
across the seed means, or, for a single seed, the run's own CI over episodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from metacompare.report.load import (CURVE_COLUMNS, EPISODE_COLUMNS, STEP_COLUMNS, config_fields, load_curves,
                                     load_episodes, load_runs, load_steps)
from metacompare.report.metric import Metric, choose_metric
from metacompare.report.stats import pool_seeds

BASELINES = ("pretrain", "scratch")
ORDER = ("reptile", "fomaml", "maml", "anil", "metasgd", "pretrain", "scratch")
# Config fields that never define a setting: bookkeeping, or (seed) what we average over.
NOT_SETTINGS = ("experiment", "results_dir", "device", "data_root", "checkpoint_interval", "eval_interval",
                "seed", "algorithm", "tracker", "tracking_uri")
STATUSES = ("finished", "diverged", "failed")
CONTEXT = ("dataset", "ways", "shots", "evaluation", "omniglot.sources", "device")  # for reference marks, captions


@dataclass
class Section:
    """One table or figure of the report, with the sentence saying what it shows."""

    title: str
    sentence: str
    caption: str = ""
    figure: str | None = None                  # file stem inside report/
    table: list[list[str]] | None = None       # header row first


@dataclass
class Experiment:
    """An experiment's runs, settings, scores and per-run series, everything the figures need."""

    directory: Path
    runs: pd.DataFrame
    settings: list[str]
    groups: pd.DataFrame
    metric: Metric
    curves: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=CURVE_COLUMNS))
    steps: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=STEP_COLUMNS))
    episodes: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=EPISODE_COLUMNS))
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.directory.name

    def algorithms(self) -> list[str]:
        present = list(dict.fromkeys(self.groups["algorithm"]))
        return sorted(present, key=lambda a: (ORDER.index(a) if a in ORDER else len(ORDER), a))


def setting_fields(runs: pd.DataFrame) -> list[str]:
    """Config fields (not the seed) that take more than one value across runs, in schema order."""
    names = [c for c in config_fields() if c in runs.columns and c not in NOT_SETTINGS]
    return [c for c in names if runs[c].dropna().astype(str).nunique() > 1]


def summarize(runs: pd.DataFrame, settings: Sequence[str], metric: Metric) -> pd.DataFrame:
    """One row per algorithm and setting: score mean and 95% CI, cost, and status counts."""
    keys = ["algorithm", *settings]
    rows = []
    for values, group in runs.groupby(keys, dropna=False, sort=False):
        values = values if isinstance(values, tuple) else (values,)
        rows.append({**{c: group[c].iloc[0] for c in CONTEXT if c in group}, **dict(zip(keys, values)),
                     **_group_score(group, metric)})
    groups = pd.DataFrame(rows)
    order = {a: i for i, a in enumerate(ORDER)}
    groups["_order"] = groups["algorithm"].map(lambda a: order.get(a, len(order)))
    return groups.sort_values(["_order", "algorithm", *settings]).drop(columns="_order").reset_index(drop=True)


def _group_score(group: pd.DataFrame, metric: Metric) -> dict:
    scored = group[(group["status"] == "finished") & np.isfinite(group[f"{metric.column}_mean"])]
    scored = scored.drop_duplicates("seed", keep="last")  # a rerun of a seed (new run id) replaces it
    mean, ci = pool_seeds(list(scored[f"{metric.column}_mean"] * metric.scale),
                          list(scored[f"{metric.column}_ci95"] * metric.scale))
    if len(scored) >= 2:
        ci_over = f"{len(scored)} seeds"
    elif len(scored) == 1:
        ci_over = f"{int(scored['test_episodes'].iloc[0])} episodes, 1 seed" if "test_episodes" in scored \
            else "episodes, 1 seed"
    else:
        ci_over = ""
    counts = {s: int((group["status"] == s).sum()) for s in STATUSES}
    return {"score_mean": mean, "score_ci95": ci, **_companion_scores(scored, metric),
            "ci_over": ci_over, "seeds": int(len(scored)),
            "seconds_per_iteration": nanmean(group["seconds_per_iteration"]),
            "peak_memory_mb": nanmean(group["peak_memory_mb"]),
            **counts, "other": int(len(group) - sum(counts.values())), "runs": int(len(group)),
            "run_ids": ";".join(map(str, scored["run_id"]))}


# Scores recorded beside the test score (scoring.py): the untrained network under the same test
# procedure ("floor"), and both under the config's common procedure.
COMPANIONS = {"floor": "floor", "common": "test_common", "common_floor": "floor_common"}


def _companion_scores(scored: pd.DataFrame, metric: Metric) -> dict:
    """``<name>_mean`` / ``<name>_ci95`` for each companion score the runs have, pooled like the score."""
    word = metric.column.removeprefix("test_")
    out = {}
    for name, prefix in COMPANIONS.items():
        column = f"{prefix}_{word}"
        if f"{column}_mean" not in scored or scored[f"{column}_mean"].isna().all():
            continue
        values = pd.to_numeric(scored[f"{column}_mean"], errors="coerce") * metric.scale
        cis = pd.to_numeric(scored.get(f"{column}_ci95", values * math.nan), errors="coerce") * metric.scale
        out[f"{name}_mean"], out[f"{name}_ci95"] = pool_seeds(list(values), list(cis))
    return out


def nanmean(values: pd.Series) -> float:
    array = pd.to_numeric(values, errors="coerce").to_numpy(float)
    array = array[np.isfinite(array)]
    return float(array.mean()) if array.size else math.nan


def analyse(experiment_dir: Path) -> Experiment:
    """Load an experiment folder, group its runs into settings and read each run's series."""
    runs = load_runs(experiment_dir)
    settings = setting_fields(runs)
    metric = choose_metric(runs)
    run_ids = [str(r) for r in runs["run_id"]]
    episodes, notes = load_episodes(experiment_dir, runs, metric)
    return Experiment(Path(experiment_dir), runs, settings, summarize(runs, settings, metric), metric,
                      curves=load_curves(experiment_dir, run_ids, metric),
                      steps=load_steps(experiment_dir, run_ids, metric), episodes=episodes, notes=notes)
