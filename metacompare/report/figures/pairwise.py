"""Paired comparisons: every pair of algorithms on the test episodes and seeds both were scored on.

All algorithms of an experiment are scored on the same fixed test episodes (drawn from ``eval_seed``),
so per-episode differences are paired (Chen et al. 2019 ask for exactly this kind of comparison).
Per-episode scores come from each run's ``episodes.csv``; per-seed scores from ``runs.csv``.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from metacompare.storage.provenance import episode_difference
from metacompare.report.experiment import Experiment, Section
from metacompare.report.select import headlines, run_ids
from metacompare.report.stats import pairwise

HEADER = ["A", "B", "paired over", "pairs", "mean A − B (95% CI)", "paired t p", "Wilcoxon p", "t p (Holm)",
          "Wilcoxon p (Holm)", "verdict (Holm-adjusted t, α = 0.05)"]


def episode_scores(exp: Experiment) -> pd.DataFrame:
    """Per-episode scores of each algorithm's best setting (columns algorithm, seed, episode, score)."""
    keep = {r for row in headlines(exp) for r in run_ids(row)}
    return exp.episodes[exp.episodes["run_id"].isin(keep)][["algorithm", "seed", "episode", "score"]]


def seed_scores(exp: Experiment) -> pd.DataFrame:
    """Per-seed test means of each algorithm's best setting, one 'episode' per seed."""
    keep = {r for row in headlines(exp) for r in run_ids(row)}
    runs = exp.runs[exp.runs["run_id"].astype(str).isin(keep)]
    return pd.DataFrame({"algorithm": runs["algorithm"], "seed": runs["seed"], "episode": 0,
                         "score": runs[f"{exp.metric.column}_mean"] * exp.metric.scale})


def _in_report_order(scores: pd.DataFrame, exp: Experiment) -> pd.DataFrame:
    rank = {a: i for i, a in enumerate(exp.algorithms())}
    return scores.sort_values("algorithm", key=lambda c: c.map(rank), kind="stable")


def other_episodes(exp: Experiment) -> str:
    """Why the headline runs cannot be paired per episode ('' when they can): they were tested on
    different episodes (ways, shots, data, ``eval_seed``... :func:`metacompare.storage.provenance.episode_identity`)."""
    keep = {r for row in headlines(exp) for r in run_ids(row)}
    kept = exp.episodes[exp.episodes["run_id"].isin(keep)].drop_duplicates("run_id")
    if kept["episodes_key"].nunique() < 2:
        return ""
    first, other = kept.iloc[0], kept[kept["episodes_key"] != kept.iloc[0]["episodes_key"]].iloc[0]
    difference = episode_difference(json.loads(first["episodes_key"] or "{}"), json.loads(other["episodes_key"] or "{}"))
    return (f"Not paired over test episodes: {other['algorithm']} was tested on other episodes than "
            f"{first['algorithm']} ({difference}). ")


def data(exp: Experiment) -> pd.DataFrame:
    """The pairwise table over episodes (where saved, and only on identical episodes) and over seeds
    (where at least two are shared)."""
    tables = []
    episodes = _in_report_order(episode_scores(exp), exp)
    if episodes["algorithm"].nunique() >= 2 and not other_episodes(exp):
        tables.append(pairwise(episodes, "episode", exp.metric.higher_is_better))
    seeds = _in_report_order(seed_scores(exp), exp)
    if seeds.groupby("algorithm")["seed"].nunique().ge(2).sum() >= 2:
        by_seed = pairwise(seeds, "seed", exp.metric.higher_is_better)
        tables.append(by_seed[by_seed["n"] >= 2])
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def rows(table: pd.DataFrame, exp: Experiment) -> list[list[str]]:
    metric, p = exp.metric, lambda v: "n/a" if not math.isfinite(v) else f"{v:.3g}"  # noqa: E731
    body = [[r.a, r.b, f"{r.over}s", str(r.n), f"{metric.number(r.difference)} ± {metric.number(r.difference_ci95)}",
             p(r.t_p), p(r.wilcoxon_p), p(r.t_p_holm), p(r.wilcoxon_p_holm), r.verdict] for r in table.itertuples()]
    return [HEADER, *body]


def section(exp: Experiment) -> Section | None:
    if len(headlines(exp)) < 2:
        return None
    table = data(exp)
    missing = exp.episodes.empty
    note = ("Per-episode scores (episodes.csv in each run folder) are not in these runs, so the comparison over "
            "test episodes is skipped. " if missing else other_episodes(exp)) + " ".join(exp.notes)
    if table.empty:
        return Section("Paired comparisons", (note + "No two algorithms share two or more seeds either, so no "
                                                  "paired test is possible.").strip())
    wins = [v for v in table["verdict"] if "beats" in v]
    text = (note + f"{len(table)} comparison(s); " + ("; ".join(dict.fromkeys(wins)) if wins else
                                                      "no significant difference in any") + ".").strip()
    caption = ("Each algorithm at its best setting. A − B: mean over the shared units of the difference in "
               f"{metric_name(exp)} (positive: A scored higher), 95% Student-t CI. p-values: paired t-test and "
               "Wilcoxon signed-rank test (scipy.stats), then Holm's correction across the pairs (episodes and "
               "seeds corrected separately); with five pairs or fewer the exact Wilcoxon test cannot reach "
               "p < 0.05. The verdict names "
               "the better algorithm where the Holm-adjusted t-test rejects equality. Also in pairwise.csv.")
    return Section("Paired comparisons", text, caption, table=rows(table, exp))


def metric_name(exp: Experiment) -> str:
    return exp.metric.name + (" (points)" if exp.metric.is_accuracy else "")
