"""Series of one setting over its seeds: validation learning curves and scores by adaptation steps."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from metacompare.report.experiment import Experiment
from metacompare.report.stats import across_rows, pool_seeds


def learning_curve(exp: Experiment, run_ids: Sequence[str]) -> pd.DataFrame | None:
    """Validation score per evaluation point over a setting's runs, with its band.

    Several seeds: mean and 95% CI across seeds at the iterations all of them logged. One seed: the
    run's own validation mean and CI over episodes.
    """
    curves = exp.curves[exp.curves["run_id"].isin(list(run_ids))]
    frames = [f.set_index("iteration") for _, f in curves.groupby("run_id", sort=False)]
    if not frames:
        return None
    if len(frames) == 1:
        f = frames[0]
        return pd.DataFrame({"iteration": f.index.to_numpy(), "wall_time_s": f["wall_time_s"].to_numpy(float),
                             "mean": f["mean"].to_numpy(float), "ci95": f["ci95"].to_numpy(float)})
    common = sorted(set.intersection(*(set(f.index) for f in frames)))
    values = np.stack([f.loc[common, "mean"].to_numpy(float) for f in frames])
    walls = np.stack([f.loc[common, "wall_time_s"].to_numpy(float) for f in frames])
    mean, ci = across_rows(values)
    return pd.DataFrame({"iteration": common, "wall_time_s": walls.mean(axis=0), "mean": mean, "ci95": ci})


def scores_by_steps(exp: Experiment, run_ids: str | Sequence[str]) -> dict[int, tuple[float, float]]:
    """A setting's test score after each number of adaptation steps (``test_inner_steps``): mean over
    its seeds, with the 95% CI across seeds, or over test episodes for a single seed."""
    ids = [r for r in str(run_ids).split(";") if r] if isinstance(run_ids, str) else list(run_ids)
    steps = exp.steps[exp.steps["run_id"].isin(ids)]
    return {int(k): pool_seeds(list(g["mean"]), list(g["ci95"])) for k, g in steps.groupby("steps", sort=True)}
