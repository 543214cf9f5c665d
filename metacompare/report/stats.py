"""Statistics of a report: intervals across seeds, clipped bands, and paired comparisons.

Quantiles and tests come from ``scipy.stats``; an interval over fewer than two values is undefined
(NaN, shown as "n/a"), never zero. Paired comparisons follow the advice of Chen et al. 2019 (*A Closer
Look at Few-shot Classification*) to score every method on the same episodes: the difference per
shared episode (or per shared seed) is tested with a paired t-test and a Wilcoxon signed-rank test, and
the p-values of all pairs are corrected with Holm's (1979) step-down method.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from metacompare.storage.results import mean_ci95, t_critical

ALPHA = 0.05
PAIR_COLUMNS = ["a", "b", "over", "n", "mean_a", "mean_b", "difference", "difference_ci95", "t_p", "wilcoxon_p",
                "t_p_holm", "wilcoxon_p_holm", "verdict"]


def pool_seeds(means: list[float], own_cis: list[float]) -> tuple[float, float]:
    """A setting's score from its seeds' scores: mean and 95% CI across seeds when there are several;
    with one seed, that run's own CI over test episodes."""
    if len(means) >= 2:
        return mean_ci95(means)
    return (float(means[0]), float(own_cis[0])) if means else (math.nan, math.nan)


def across_rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column-wise mean and Student-t 95% CI half-width of a (seeds x points) array."""
    n = values.shape[0]
    ci = t_critical(n) * values.std(axis=0, ddof=1) / math.sqrt(n) if n >= 2 else np.full(values.shape[1], np.nan)
    return values.mean(axis=0), ci


def band(mean: pd.Series, ci: pd.Series, upper: float) -> tuple[pd.Series, pd.Series]:
    """The interval mean ± ci clipped to the score's range [0, upper]; an undefined CI gives no band."""
    half = ci.fillna(0.0)
    return (mean - half).clip(0.0, upper), (mean + half).clip(0.0, upper)


def holm(p_values: list[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values: the i-th smallest of m is multiplied by (m - i + 1), kept
    monotone and capped at 1; NaN p-values are left out of m and stay NaN."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m, running = len(order), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def paired_test(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean of a - b with its 95% CI, the paired t-test's and the Wilcoxon signed-rank test's p-values."""
    d = np.asarray(a, float) - np.asarray(b, float)
    mean, ci = mean_ci95(list(d)) if d.size else (math.nan, math.nan)
    if d.size < 2:
        return {"n": int(d.size), "difference": mean, "difference_ci95": math.nan, "t_p": math.nan,
                "wilcoxon_p": math.nan}
    if not np.any(d != 0):
        return {"n": int(d.size), "difference": mean, "difference_ci95": ci, "t_p": 1.0, "wilcoxon_p": 1.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        t_p = float(stats.ttest_rel(a, b).pvalue)
        w_p = float(stats.wilcoxon(a, b).pvalue)
    if np.isnan(t_p) or np.all(d == d[0]):
        # Constant non-zero differences leave t undefined (no spread to estimate). The honest p is the
        # exact sign test's, the smallest any distribution-free paired test can give: all n signs
        # agree with probability 2 / 2^n, so 2 seeds never make a verdict (p = 0.5), 1,000 episodes do.
        t_p = min(1.0, 2.0 * 0.5 ** d.size)
    return {"n": int(d.size), "difference": mean, "difference_ci95": ci, "t_p": t_p, "wilcoxon_p": w_p}


def aligned(scores: pd.DataFrame, a: str, b: str, over: str) -> pd.DataFrame:
    """The scores of ``a`` and ``b`` side by side on the units both have: (seed, episode) pairs, or seeds
    (each seed's mean over its episodes). Two algorithms that share no seed (one's run diverged, say)
    are paired per episode on each one's mean over its seeds: the test episodes are drawn from the
    evaluation seed, not the training seed, so episode ``i`` is the same task for every run."""
    def side_by_side(keys):
        wide = [scores[scores["algorithm"] == name].groupby(keys)["score"].mean().rename(name) for name in (a, b)]
        return pd.concat(wide, axis=1, join="inner").dropna()
    if over != "episode":
        return side_by_side(["seed"])
    pairs = side_by_side(["seed", "episode"])
    return pairs if len(pairs) else side_by_side(["episode"])


def pairwise(scores: pd.DataFrame, over: str, higher_is_better: bool = True, alpha: float = ALPHA) -> pd.DataFrame:
    """Every pair of algorithms compared on the units both were scored on, Holm-corrected, with a verdict.

    Args:
        scores: one row per scored unit: columns ``algorithm``, ``seed``, ``episode``, ``score``.
        over: ``"episode"`` (pairs of per-episode scores) or ``"seed"`` (pairs of per-seed means).
        higher_is_better: accuracy (True) or an error such as MSE (False), for the verdict's direction.
        alpha: family-wise error rate of the verdicts.

    Returns:
        One row per pair (columns ``PAIR_COLUMNS``): ``difference`` is mean(a - b) over the shared units.
        The verdict rests on the Holm-adjusted paired t-test; the Wilcoxon p-values are shown beside it.
    """
    names = list(dict.fromkeys(scores["algorithm"]))
    rows = []
    for a, b in itertools.combinations(names, 2):
        pair = aligned(scores, a, b, over)
        rows.append({"a": a, "b": b, "over": over, "mean_a": float(pair[a].mean()) if len(pair) else math.nan,
                     "mean_b": float(pair[b].mean()) if len(pair) else math.nan,
                     **paired_test(pair[a].to_numpy(), pair[b].to_numpy())})
    table = pd.DataFrame(rows, columns=PAIR_COLUMNS[:-3])
    table["t_p_holm"] = holm(table["t_p"])
    table["wilcoxon_p_holm"] = holm(table["wilcoxon_p"])
    table["verdict"] = [verdict(r, higher_is_better, alpha) for r in table.itertuples()]
    return table


def verdict(row, higher_is_better: bool, alpha: float = ALPHA) -> str:
    """"a beats b" when the Holm-adjusted paired t-test rejects equality, else "no significant difference"."""
    if not (math.isfinite(row.t_p_holm) and row.t_p_holm < alpha):
        return "no significant difference" if math.isfinite(row.t_p_holm) else "too few pairs to test"
    a_better = (row.difference > 0) == higher_is_better
    return f"{row.a} beats {row.b}" if a_better else f"{row.b} beats {row.a}"
