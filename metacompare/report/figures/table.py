"""The results table: one row per algorithm and setting, with the sentence naming the best."""

from __future__ import annotations

import math

import pandas as pd

from metacompare.report.experiment import STATUSES, Experiment, Section
from metacompare.report.select import best_row, label_of, show_value, why_unscored

CSV_TAIL = ["score_mean", "score_ci95", "floor_mean", "floor_ci95", "common_mean", "common_ci95", "common_floor_mean",
            "common_floor_ci95", "ci_over", "seeds", "seconds_per_iteration", "peak_memory_mb", *STATUSES,
            "other", "runs", "run_ids"]


def csv_table(exp: Experiment) -> pd.DataFrame:
    """``table.csv``: the settings with their scores, the score columns named after the metric."""
    suffix = "_pct" if exp.metric.is_accuracy else ""
    columns = [c for c in CSV_TAIL if c in exp.groups]
    return exp.groups[["algorithm", *exp.settings, *columns]].rename(columns={
        "score_mean": f"{exp.metric.column}_mean{suffix}", "score_ci95": f"{exp.metric.column}_ci95{suffix}"})


COMPANION_HEADERS = {"floor": "untrained floor", "common": "common procedure", "common_floor": "common, untrained"}


def companions(exp: Experiment) -> list[str]:
    """The companion scores (floor, common procedure) this experiment's runs recorded."""
    return [name for name in COMPANION_HEADERS if f"{name}_mean" in exp.groups
            and exp.groups[f"{name}_mean"].notna().any()]


def table_rows(exp: Experiment) -> list[list[str]]:
    """The results table as text cells (header first); a setting with no score says why. Beside the
    score: the untrained network's under the same test procedure, and both under the common procedure."""
    metric = exp.metric
    extra = companions(exp)
    header = ["algorithm", *exp.settings, f"{metric.name}{' %' if metric.is_accuracy else ''} (mean ± 95% CI)",
              *[COMPANION_HEADERS[name] for name in extra],
              "CI over", "s / meta-iteration", "peak memory (MB)", "finished", "diverged", "failed"]
    rows = [header]
    def cell(mean, ci):
        return f"{metric.number(mean)} ± {metric.number(ci)}" if math.isfinite(mean) else "–"
    for _, g in exp.groups.iterrows():
        score = cell(g["score_mean"], g["score_ci95"]) if math.isfinite(g["score_mean"]) else why_unscored(g)
        rows.append([str(g["algorithm"]), *[show_value(s, g[s]) for s in exp.settings], score,
                     *[cell(g[f"{name}_mean"], g[f"{name}_ci95"]) for name in extra], g["ci_over"] or "–",
                     _fmt(g["seconds_per_iteration"], ".3g"), _fmt(g["peak_memory_mb"], ".0f"),
                     str(g["finished"]), str(g["diverged"]), str(g["failed"])])
    return rows


def _fmt(value: float, spec: str) -> str:
    return format(value, spec) if math.isfinite(value) else "–"


def section(exp: Experiment) -> Section:
    metric = exp.metric
    best = best_row(exp.groups, metric)
    counts = {s: int(exp.groups[s].sum()) for s in STATUSES}
    if best is None:
        text = "No run has a test score."
    else:
        text = f"The best setting is {label_of(exp, best)} with {metric.name} {metric.show(best['score_mean'])}"
        runner_up = best_row(exp.groups[exp.groups["algorithm"] != best["algorithm"]], metric)
        if runner_up is not None:
            text += (f", {metric.gap(abs(best['score_mean'] - runner_up['score_mean']))} "
                     f"{'above' if metric.higher_is_better else 'below'} the best other algorithm, "
                     f"{label_of(exp, runner_up)}")
        text += "."
    n = len(exp.runs)
    text += (f" {n} run{'s' if n != 1 else ''}: {counts['finished']} finished, {counts['diverged']} diverged, "
             f"{counts['failed']} failed.")
    caption = (f"One row per algorithm and setting (the fields that vary across runs: "
               f"{', '.join(exp.settings) or 'none'}). {metric.name[0].upper() + metric.name[1:]}: mean over seeds "
               f"of each run's mean over test episodes; the 95% CI is across seed means when a setting has several "
               f"seeds, else over the single run's test episodes (column 'CI over'); n/a: undefined (one value). A "
               f"setting whose runs all diverged or failed shows that instead of a score. Untrained floor: the "
               f"initial network (before meta-training) scored by the same test procedure on the same episodes; "
               f"the gain from meta-training is the difference. Common procedure: every algorithm adapted by the "
               f"config's common_evaluation instead of its own test procedure.")
    return Section("Results table", text, caption, table=table_rows(exp))
