"""Tables and figures of an experiment, made from its result files alone.

``write_report(results/<experiment>)`` reads ``runs.csv`` and each run's ``config.yaml`` and
``metrics.csv`` (a failed run may have neither; a diverged run has no test score) and writes
``report/``: ``table.csv``/``table.md``, PNG+SVG figures, ``report.md`` and ``report.html``.

A *setting* is a combination of the config fields that vary across the experiment's runs (the seed
aside); its score is the mean over its seeds of each run's mean over test episodes, with a 95% CI
across the seed means, or, for a single seed, the run's own CI over episodes. Figures that need one
setting per algorithm use its best; sweeps over one field fix the others at their most common value.
Sine is scored by test MSE (lower is better), classification by test accuracy.
"""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import NullLocator

from metacompare import provenance, results
from metacompare.config import RunConfig
from metacompare.errors import UserError

# Published few-shot test accuracies (%) on the full Omniglot benchmark (1200 training characters
# x 4 rotations, transductive evaluation), for reference marks: (dataset, ways, shots) -> algorithm ->
# (accuracy, source).
PUBLISHED_ACCURACY: dict[tuple[str, int, int], dict[str, tuple[float, str]]] = {
    ("omniglot", 5, 1): {"maml": (98.7, "Finn et al. 2017, Table 1"),
                         "fomaml": (98.3, "Finn et al. 2017, Table 1"),
                         "reptile": (97.68, "Nichol et al. 2018, Table 1 (transductive)")},
    ("omniglot", 5, 5): {"maml": (99.9, "Finn et al. 2017, Table 1"),
                         "fomaml": (99.2, "Finn et al. 2017, Table 1"),
                         "reptile": (99.48, "Nichol et al. 2018, Table 1 (transductive)")},
    ("omniglot", 20, 1): {"maml": (95.8, "Finn et al. 2017, Table 1"),
                          "fomaml": (89.4, "Finn et al. 2017, Table 1"),
                          "reptile": (89.43, "Nichol et al. 2018, Table 1 (transductive)")},
    ("omniglot", 20, 5): {"maml": (98.9, "Finn et al. 2017, Table 1"),
                          "fomaml": (97.9, "Finn et al. 2017, Table 1"),
                          "reptile": (97.12, "Nichol et al. 2018, Table 1 (transductive)")},
}

BASELINES = ("pretrain", "scratch")
ORDER = ("reptile", "fomaml", "maml", "anil", "metasgd", "pretrain", "scratch")
# Config fields that never define a setting: bookkeeping, or (seed) what we average over.
NOT_SETTINGS = ("experiment", "results_dir", "device", "data_root", "checkpoint_interval", "eval_interval",
                "seed", "algorithm", "tracker", "tracking_uri")
STATUSES = ("finished", "diverged", "failed")
CONTEXT = ("dataset", "ways", "shots", "evaluation", "omniglot.sources", "device")  # for reference marks, captions
PRETTY = {"num_tasks": "training tasks", "inner_lr": "inner learning rate", "outer_lr": "outer learning rate",
          "inner_steps": "inner steps", "meta_batch_size": "meta-batch size"}


@dataclass(frozen=True)
class Metric:
    """Which score a report uses and how to show it."""

    name: str             # in sentences: "test accuracy"
    axis: str             # axis label
    column: str           # runs.csv prefix: <column>_mean, <column>_ci95
    val_column: str       # metrics.csv prefix
    scale: float          # accuracy is stored as a fraction, shown in %
    higher_is_better: bool
    fmt: str

    def number(self, value: float) -> str:
        if not math.isfinite(value):
            return "n/a"
        return format(value, ".3g" if abs(value) >= 1e4 else self.fmt)

    def show(self, value: float) -> str:
        """With its unit, for sentences: "92.00%"."""
        return self.number(value) + ("%" if self is ACCURACY and math.isfinite(value) else "")

    def gap(self, value: float) -> str:
        """A difference of two scores: "4.00 points" for accuracy."""
        return self.number(value) + (" points" if self is ACCURACY else "")

    @property
    def word(self) -> str:
        """The score's name without its unit: "accuracy", "mean-squared error"."""
        return self.axis.split(" (")[0]

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"

    def goodness(self, value: float) -> float:
        """Larger is better, whichever the score: for max() and min()."""
        return value if self.higher_is_better else -value

    def better(self, a: float, b: float) -> bool:
        return a > b if self.higher_is_better else a < b


ACCURACY = Metric("test accuracy", "accuracy (%)", "test_accuracy", "val_accuracy", 100.0, True, ".2f")
MSE = Metric("test MSE", "mean-squared error", "test_loss", "val_loss", 1.0, False, ".3f")


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
    """An experiment's runs, its settings (groups of seeds) and the score used to compare them."""

    directory: Path
    runs: pd.DataFrame
    settings: list[str]
    groups: pd.DataFrame
    metric: Metric
    sections: list[Section] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.directory.name

    def algorithms(self) -> list[str]:
        present = list(dict.fromkeys(self.groups["algorithm"]))
        return sorted(present, key=lambda a: (ORDER.index(a) if a in ORDER else len(ORDER), a))

    def color(self, algorithm: str) -> str:
        palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#7f7f7f", "#bcbd22", "#17becf",
                   "#e377c2", "#d62728"]
        return palette[self.algorithms().index(algorithm) % len(palette)]


# ----------------------------------------------------------------------------------------- loading
def config_fields() -> list[str]:
    """Flat names of every config field (``omniglot.rotations``), from the current schema."""
    return list(_flatten(RunConfig().to_dict()))


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
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
    runs = pd.read_csv(table)
    if runs.empty:
        raise UserError(f"{table}: holds no runs yet; run an experiment first")
    extra = []
    for run_id in runs["run_id"]:
        path = experiment_dir / str(run_id) / "config.yaml"
        extra.append(_flatten(yaml.safe_load(path.read_text()) or {}) if path.is_file() else {})
    extra = pd.DataFrame(extra, index=runs.index)
    defaults = _flatten(RunConfig().to_dict())
    for column in extra.columns:
        if column not in runs.columns:
            # a field added to the schema after a run was made: that run had the default behaviour
            runs[column] = extra[column].where(extra[column].notna(), defaults.get(column))
    runs["status"] = runs["status"].fillna("failed").astype(str)
    for column in ("test_accuracy_mean", "test_accuracy_ci95", "test_loss_mean", "test_loss_ci95",
                   "seconds_per_iteration", "peak_memory_mb", "seed"):
        runs[column] = pd.to_numeric(runs[column], errors="coerce") if column in runs else np.nan
    return runs


def setting_fields(runs: pd.DataFrame) -> list[str]:
    """Config fields (not the seed) that take more than one value across runs, in schema order."""
    names = [c for c in config_fields() if c in runs.columns and c not in NOT_SETTINGS]
    return [c for c in names if runs[c].dropna().astype(str).nunique() > 1]


def choose_metric(runs: pd.DataFrame) -> Metric:
    return MSE if set(runs["dataset"].astype(str)) == {"sine"} else ACCURACY


def summarize(runs: pd.DataFrame, settings: Sequence[str], metric: Metric) -> pd.DataFrame:
    """One row per algorithm and setting: score mean and 95% CI, cost, and status counts."""
    keys = ["algorithm", *settings]
    rows = []
    for values, group in runs.groupby(keys, dropna=False, sort=False):
        values = values if isinstance(values, tuple) else (values,)
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
        rows.append({
            **{c: group[c].iloc[0] for c in CONTEXT if c in group}, **dict(zip(keys, values)),
            "score_mean": mean, "score_ci95": ci, "ci_over": ci_over, "seeds": int(len(scored)),
            "seconds_per_iteration": _nanmean(group["seconds_per_iteration"]),
            "peak_memory_mb": _nanmean(group["peak_memory_mb"]),
            **counts, "other": int(len(group) - sum(counts.values())), "runs": int(len(group)),
            "run_ids": ";".join(map(str, scored["run_id"])),
        })
    groups = pd.DataFrame(rows)
    order = {a: i for i, a in enumerate(ORDER)}
    groups["_order"] = groups["algorithm"].map(lambda a: order.get(a, len(order)))
    return groups.sort_values(["_order", "algorithm", *settings]).drop(columns="_order").reset_index(drop=True)


def pool_seeds(means: list[float], own_cis: list[float]) -> tuple[float, float]:
    """A setting's score from its seeds' scores: mean and 95% CI across seeds when there are several;
    with one seed, that run's own CI over test episodes."""
    if len(means) >= 2:
        return results.mean_ci95(means)
    return (float(means[0]), float(own_cis[0])) if means else (math.nan, math.nan)


def _nanmean(values: pd.Series) -> float:
    array = pd.to_numeric(values, errors="coerce").to_numpy(float)
    array = array[np.isfinite(array)]
    return float(array.mean()) if array.size else math.nan


# ------------------------------------------------------------------------------------ selection
def best_row(groups: pd.DataFrame, metric: Metric) -> pd.Series | None:
    scored = groups[np.isfinite(groups["score_mean"].to_numpy(float))]
    if scored.empty:
        return None
    index = scored["score_mean"].idxmax() if metric.higher_is_better else scored["score_mean"].idxmin()
    return scored.loc[index]


def headline(exp: Experiment, algorithm: str) -> pd.Series | None:
    """An algorithm's best setting (its only one, when nothing was swept)."""
    return best_row(exp.groups[exp.groups["algorithm"] == algorithm], exp.metric)


def sweep_slice(exp: Experiment, algorithm: str, free: Sequence[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """An algorithm's settings where only ``free`` fields vary; the others are fixed at their most
    common value (ties: the value of the best setting), so a one-factor sweep keeps its base."""
    rows = exp.groups[exp.groups["algorithm"] == algorithm]
    fixed = {}
    for name in exp.settings:
        if name in free:
            continue
        counts = rows[name].astype(str).value_counts()
        if counts.empty:
            continue
        top = list(counts[counts == counts.max()].index)
        best = best_row(rows, exp.metric)
        value = str(best[name]) if best is not None and str(best[name]) in top else top[0]
        rows = rows[rows[name].astype(str) == value]
        if len(counts) > 1:
            fixed[name] = rows[name].iloc[0]
    return rows, fixed


def varying_within(exp: Experiment, algorithm: str) -> list[str]:
    rows = exp.groups[exp.groups["algorithm"] == algorithm]
    return [s for s in exp.settings if rows[s].astype(str).nunique() > 1]


def label_of(exp: Experiment, row: pd.Series) -> str:
    """``maml (inner_lr=0.1)``: the algorithm and its fields that vary between its own settings."""
    parts = [f"{name}={show_value(name, row[name])}" for name in varying_within(exp, row["algorithm"])]
    return f"{row['algorithm']} ({', '.join(parts)})" if parts else str(row["algorithm"])


def show_value(name: str, value: Any) -> str:
    if name == "num_tasks" and _num(value) == -1:
        return "unlimited"
    if isinstance(value, float) and value.is_integer() and name not in ("inner_lr", "outer_lr"):
        return str(int(value))
    return format(value, "g") if isinstance(value, float) else str(value)


def describe(fixed: dict[str, Any]) -> str:
    return ", ".join(f"{k}={show_value(k, v)}" for k, v in fixed.items())


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def published(row: pd.Series) -> tuple[float, str] | None:
    """The paper's accuracy for this algorithm and setting, if one matches (transductive only)."""
    if str(row.get("evaluation", "transductive")) not in ("transductive", "nan"):
        return None
    ways, shots = _num(row.get("ways")), _num(row.get("shots"))
    if not (math.isfinite(ways) and math.isfinite(shots)):
        return None
    key = (str(row.get("dataset")), int(ways), int(shots))
    return PUBLISHED_ACCURACY.get(key, {}).get(str(row["algorithm"]))


# ------------------------------------------------------------------------------------- curves
def learning_curve(exp: Experiment, run_ids: Sequence[str]) -> pd.DataFrame | None:
    """Validation score per evaluation point over a setting's runs, with its band.

    Several seeds: mean and 95% CI across seeds at the iterations all of them logged. One seed: the
    run's own validation mean and CI over episodes.
    """
    mean_col, ci_col = f"{exp.metric.val_column}_mean", f"{exp.metric.val_column}_ci95"
    frames = []
    for run_id in run_ids:
        path = exp.directory / run_id / "metrics.csv"
        if not path.is_file():
            continue
        try:
            frame = pd.read_csv(path)
        except pd.errors.EmptyDataError:  # a run stopped before its first evaluation logs no columns
            continue
        if frame.empty or mean_col not in frame or not np.isfinite(frame[mean_col]).any():
            continue
        frames.append(frame.drop_duplicates("iteration", keep="last").set_index("iteration"))
    if not frames:
        return None
    scale = exp.metric.scale
    if len(frames) == 1:
        f = frames[0]
        ci = f[ci_col].fillna(0.0) if ci_col in f else 0.0
        return pd.DataFrame({"iteration": f.index, "wall_time_s": f["wall_time_s"].to_numpy(),
                             "mean": (f[mean_col] * scale).to_numpy(), "ci95": (ci * scale).to_numpy()})
    common = sorted(set.intersection(*(set(f.index) for f in frames)))
    values = np.stack([f.loc[common, mean_col].to_numpy(float) * scale for f in frames])
    walls = np.stack([f.loc[common, "wall_time_s"].to_numpy(float) for f in frames])
    ci = results.t_critical(len(frames)) * values.std(axis=0, ddof=1) / math.sqrt(len(frames))
    return pd.DataFrame({"iteration": common, "wall_time_s": walls.mean(axis=0), "mean": values.mean(axis=0),
                         "ci95": ci})


# ------------------------------------------------------------------------------------- figures
def _save(fig: Figure, out: Path, stem: str) -> str:
    fig.savefig(out / f"{stem}.png", dpi=130, bbox_inches="tight")
    fig.savefig(out / f"{stem}.svg", bbox_inches="tight")
    return stem


def _scale_y(ax, values: Sequence[float], metric: Metric) -> None:
    """MSE spanning orders of magnitude reads better on a log axis."""
    values = np.asarray([v for v in values if math.isfinite(v) and v > 0])
    if not metric.higher_is_better and values.size and values.max() / values.min() > 30:
        ax.set_yscale("log")


def _reference_note(exp: Experiment, rows: Sequence[pd.Series]) -> str:
    marks = [(r["algorithm"], *published(r)) for r in rows if published(r) is not None]
    if not marks:
        return ""
    sources = "; ".join(f"{a} {v:g}% ({s})" for a, v, s in marks)
    small = any("small" in str(r.get("omniglot.sources", "")) for r in rows)
    dataset = ("these runs use the reduced 'minimal' Omniglot splits and few iterations, so the marks are "
               "context, not a target" if small else
               "the marks are context: they need the papers' full training budget")
    return f" Reference marks: published test accuracy for the same ways/shots: {sources}; {dataset}."


def figure_learning_curves(exp: Experiment, out: Path) -> Section | None:
    metric = exp.metric
    lines = []
    for algorithm in exp.algorithms():
        row = headline(exp, algorithm)
        if row is None:
            continue
        curve = learning_curve(exp, [r for r in str(row["run_ids"]).split(";") if r])
        if curve is not None:
            lines.append((row, curve))
    if not lines:
        return None
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for row, curve in lines:
        color = exp.color(row["algorithm"])
        band = "across seeds" if int(row["seeds"]) > 1 else "over validation episodes"
        for ax, x in zip(axes, ("iteration", "wall_time_s")):
            style = "--" if row["algorithm"] in BASELINES else "-"
            ax.plot(curve[x], curve["mean"], style, marker="o", ms=3, color=color,
                    label=f"{label_of(exp, row)}, 95% CI {band}")
            low = (curve["mean"] - curve["ci95"]).clip(lower=0.0)  # neither MSE nor accuracy goes below 0
            ax.fill_between(curve[x], low, curve["mean"] + curve["ci95"], color=color,
                            alpha=0.08, lw=0.8, ls=style, edgecolor=color)
            mark = published(row)
            if mark is not None:
                ax.axhline(mark[0], color=color, ls=":", lw=1.2)
    for ax in axes:
        _scale_y(ax, [v for _, c in lines for v in c["mean"]], metric)
        ax.grid(alpha=0.3)
    axes[0].set_xlabel("meta-iteration (outer update)")
    axes[1].set_xlabel("wall-clock time of training + validation (s)")
    axes[0].set_ylabel(f"validation {metric.axis}")
    if any(published(r) is not None for r, _ in lines):
        axes[0].plot([], [], ":", color="black", label="published test accuracy, full Omniglot (source in caption)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8)
    fig.suptitle(f"{exp.name}: validation {metric.word} during meta-training "
                 f"({metric.direction})")
    stem = _save(fig, out, "learning_curves")

    finals = [(r, c["mean"].iloc[-1], c["wall_time_s"].iloc[-1]) for r, c in lines]
    best = max(finals, key=lambda t: metric.goodness(t[1]))
    sentence = (f"At the last evaluation, {label_of(exp, best[0])} has the best validation "
                f"{metric.word} ({metric.show(best[1])}, after {best[2]:.0f} s)")
    if len(finals) > 1:
        worst = min(finals, key=lambda t: metric.goodness(t[1]))
        sentence += f"; {label_of(exp, worst[0])} the worst ({metric.show(worst[1])})"
    caption = ("One line per algorithm at its best setting; shaded: 95% CI across seeds, or over the "
               "validation episodes when the setting has one seed. Left: against meta-iterations; right: "
               "against wall-clock seconds." + _reference_note(exp, [r for r, _ in lines]))
    return Section("(a) Learning curves", sentence + ".", caption, figure=stem)


def figure_task_counts(exp: Experiment, out: Path) -> Section | None:
    if "num_tasks" not in exp.settings:
        return None
    metric = exp.metric
    series, fixed_all = [], {}
    for algorithm in exp.algorithms():
        rows, fixed = sweep_slice(exp, algorithm, ["num_tasks"])
        if rows["num_tasks"].nunique() >= 2:
            series.append((algorithm, rows.assign(n=rows["num_tasks"].map(_num)).sort_values("n")))
            fixed_all[algorithm] = fixed
    if not series:
        return None
    finite = sorted({n for _, r in series for n in r["n"] if n > 0})
    infinity = (max(finite) * 10) if finite else 10.0
    position = lambda n: infinity if n == -1 else n  # noqa: E731

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for k, (algorithm, rows) in enumerate(series):
        color = exp.color(algorithm)
        shift = _dodge(k, len(series))
        unscored = ~np.isfinite(rows["score_mean"].to_numpy(float))
        if unscored.any():
            _mark_unscored(ax, rows[unscored], rows["n"][unscored].map(position), color)
            rows = rows[~unscored]
        x = rows["n"].map(position).to_numpy(float) * shift
        y, ci = rows["score_mean"].to_numpy(float), rows["score_ci95"].fillna(0).to_numpy(float)
        finite_part = rows["n"].to_numpy() > 0
        ax.errorbar(x[finite_part], y[finite_part], yerr=ci[finite_part], marker="o", capsize=3, color=color,
                    label=algorithm)
        if (~finite_part).any():
            ax.errorbar(x[~finite_part], y[~finite_part], yerr=ci[~finite_part], marker="s", capsize=3,
                        color=color, ls="none")
            if finite_part.any():
                last = np.flatnonzero(finite_part)[-1]
                ax.plot([x[last], infinity * shift], [y[last], y[~finite_part][0]], ":", color=color)
        for r in [r for _, r in rows.iterrows() if published(r) is not None][:1]:
            ax.plot([infinity], [published(r)[0]], marker="*", ms=11, color=color, mec="black", ls="none")
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ticks = [*finite, infinity] if any(-1 in list(r["n"]) for _, r in series) else finite
    unlimited = ["∞\n(fresh task\neach draw)"] if len(ticks) > len(finite) else []
    ax.set_xticks(ticks, [f"{int(t)}" for t in finite] + unlimited)
    _scale_y(ax, [v for _, r in series for v in r["score_mean"]], metric)
    ax.set_xlabel("number of distinct meta-training tasks (log scale)")
    ax.set_ylabel(f"test {metric.axis}")
    ax.grid(alpha=0.3)
    if any(published(r) is not None for _, rows in series for _, r in rows.iterrows()):
        ax.plot([], [], "*", color="gray", mec="black", ms=11, label="published, full Omniglot (source in caption)")
    if any(not np.isfinite(rows["score_mean"].to_numpy(float)).all() for _, rows in series):
        ax.plot([], [], "X", ms=10, color="gray", mec="#c0392b", label="no score (diverged, failed or NaN)")
    ax.legend(title="algorithm (error bars: 95% CI)", fontsize=8)
    ax.set_title(f"{exp.name}: test {metric.word} vs number of training tasks")
    stem = _save(fig, out, "task_counts")

    facts = []
    for algorithm, rows in series:
        ordered = rows.assign(key=rows["n"].map(position)).sort_values("key")
        scored = ordered[np.isfinite(ordered["score_mean"].to_numpy(float))]
        lost = ", ".join(show_value("num_tasks", n) for n in ordered["num_tasks"][~ordered.index.isin(scored.index)])
        if len(scored) >= 2:
            first, last = scored.iloc[0], scored.iloc[-1]
            fact = (f"{algorithm} goes from {metric.show(first['score_mean'])} with "
                    f"{show_value('num_tasks', first['num_tasks'])} to {metric.show(last['score_mean'])} with "
                    f"{show_value('num_tasks', last['num_tasks'])} tasks")
        elif len(scored) == 1:
            fact = (f"{algorithm} scores {metric.show(scored['score_mean'].iloc[0])} with "
                    f"{show_value('num_tasks', scored['num_tasks'].iloc[0])} tasks")
        else:
            fact = f"{algorithm} has no score"
        facts.append(fact + (f" (no score with {lost} tasks)" if lost else ""))
    fewest = min(finite) if finite else None
    leader = ""
    if fewest is not None:
        at_fewest = [(a, v) for a, r in series for v in r[r["n"] == fewest]["score_mean"] if math.isfinite(v)]
        if len(at_fewest) > 1:
            best = max(at_fewest, key=lambda t: metric.goodness(t[1]))
            leader = f" With the fewest tasks ({int(fewest)}), {best[0]} is best."
    fixed_text = "; ".join(f"{a}: {describe(f)}" for a, f in fixed_all.items() if f)
    caption = ("Test score per number of distinct training tasks; ∞ (right end) means a fresh task for every "
               "draw. Error bars: 95% CI (across seeds, or over test episodes with one seed)."
               + (f" Other swept fields fixed at: {fixed_text}." if fixed_text else "")
               + _reference_note(exp, [r for _, rows in series for _, r in rows.iloc[:1].iterrows()]))
    return Section("(b) Number of training tasks", "; ".join(facts) + "." + leader, caption, figure=stem)


def figure_baselines(exp: Experiment, out: Path) -> Section | None:
    metric = exp.metric
    rows = [r for r in (headline(exp, a) for a in exp.algorithms()) if r is not None]
    if not rows:
        return None
    has_baselines = any(r["algorithm"] in BASELINES for r in rows)
    fig = Figure(figsize=(max(5.5, 1.3 * len(rows) + 2), 4.5), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(rows))
    for i, row in enumerate(rows):
        baseline = row["algorithm"] in BASELINES
        ax.bar(i, row["score_mean"], yerr=row["score_ci95"] if math.isfinite(row["score_ci95"]) else 0,
               capsize=4, color=exp.color(row["algorithm"]), hatch="//" if baseline else None,
               edgecolor="black", lw=0.6)
        mark = published(row)
        if mark is not None:
            ax.plot(i, mark[0], marker="_", ms=30, mew=2.5, color="black")
            ax.annotate(f"{mark[0]:g}", (i, mark[0]), xytext=(17, 0), textcoords="offset points", va="center",
                        fontsize=8)
    ax.set_xticks(x, [label_of(exp, r).replace(" (", "\n").replace(", ", "\n").rstrip(")") for r in rows],
                  fontsize=8)
    _scale_y(ax, [r["score_mean"] for r in rows], metric)
    if metric.higher_is_better:
        low = min(r["score_mean"] - r["score_ci95"] for r in rows if math.isfinite(r["score_mean"]))
        ax.set_ylim(bottom=max(0.0, low - 10))
    ax.set_ylabel(f"test {metric.axis}")
    ax.grid(axis="y", alpha=0.3)
    handles = []
    if has_baselines:
        handles += [Patch(facecolor="white", edgecolor="black", label="meta-learner"),
                    Patch(facecolor="white", edgecolor="black", hatch="//", label="baseline (no meta-learning)")]
    if any(published(r) is not None for r in rows):
        handles.append(ax.plot([], [], marker="_", ms=15, mew=2.5, color="black", ls="none",
                               label="published test accuracy, full Omniglot (source in caption)")[0])
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8)
    ax.set_xlabel("algorithm, at its best setting (error bars: 95% CI)")
    _pad_bars(ax, len(rows))
    what = "meta-learners vs baselines" if has_baselines else "algorithms compared"
    ax.set_title(f"{exp.name}: {what}, test {metric.word} "
                 f"({metric.direction})")
    stem = _save(fig, out, "baselines" if has_baselines else "algorithms")

    scored = [r for r in rows if math.isfinite(r["score_mean"])]
    best = best_row(pd.DataFrame(scored), metric) if scored else None
    if best is None:
        sentence = "No algorithm has a test score (every run diverged or failed)."
    elif has_baselines:
        meta = best_row(pd.DataFrame([r for r in scored if r["algorithm"] not in BASELINES]), metric) \
            if any(r["algorithm"] not in BASELINES for r in scored) else None
        base = best_row(pd.DataFrame([r for r in scored if r["algorithm"] in BASELINES]), metric)
        if meta is None or base is None:
            sentence = f"{best['algorithm']} is best ({metric.show(best['score_mean'])})."
        else:
            gap = abs(meta["score_mean"] - base["score_mean"])
            verb = "beats" if metric.better(meta["score_mean"], base["score_mean"]) else "trails"
            sentence = (f"The best meta-learner, {meta['algorithm']} ({metric.show(meta['score_mean'])}), {verb} "
                        f"the best baseline, {base['algorithm']} ({metric.show(base['score_mean'])}), by "
                        f"{metric.gap(gap)}.")
    else:
        worst = min(scored, key=lambda r: metric.goodness(r["score_mean"]))
        gap = abs(best["score_mean"] - worst["score_mean"])
        sentence = (f"{best['algorithm']} is best ({metric.show(best['score_mean'])}) and {worst['algorithm']} "
                    f"worst ({metric.show(worst['score_mean'])}), {metric.gap(gap)} apart."
                    if len(scored) > 1 else f"{best['algorithm']} scores {metric.show(best['score_mean'])}.")
    caption = ("Each algorithm at its best setting (named under its bar)"
               + ("; hatched bars are baselines (pretrain: supervised pre-training + fine-tuning; scratch: "
                  "trained on the support set only)" if has_baselines else "")
               + ". Error bars: 95% CI across seeds, or over test episodes with one seed." + _reference_note(exp, rows))
    return Section("(c) Meta-learners vs baselines" if has_baselines else "(c) Algorithms compared",
                   sentence, caption, figure=stem)


def figure_heatmaps(exp: Experiment, out: Path) -> Section | None:
    metric = exp.metric
    panels = []
    for algorithm in exp.algorithms():
        rows, fixed = sweep_slice(exp, algorithm, ["inner_lr", "outer_lr"])
        if {"inner_lr", "outer_lr"} <= set(exp.settings) and rows["inner_lr"].nunique() >= 2 \
                and rows["outer_lr"].nunique() >= 2:
            panels.append((algorithm, rows, fixed))
    if not panels:
        return None
    fig = Figure(figsize=(4.6 * len(panels) + 0.8, 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)[0])
    finite = [v for _, r, _ in panels for v in r["score_mean"] if math.isfinite(v)]
    log = bool(finite) and not metric.higher_is_better and min(finite) > 0 and max(finite) / min(finite) > 30
    vmin, vmax = (min(finite), max(finite)) if finite else (0, 1)
    from matplotlib.colors import LogNorm, Normalize

    norm = LogNorm(vmin, vmax) if log else Normalize(vmin, vmax)
    cmap = "viridis" if metric.higher_is_better else "viridis_r"
    image, facts = None, []
    for ax, (algorithm, rows, fixed) in zip(axes, panels):
        inner = sorted(rows["inner_lr"].map(_num).unique())
        outer = sorted(rows["outer_lr"].map(_num).unique())
        grid = np.full((len(outer), len(inner)), np.nan)
        for _, r in rows.iterrows():
            grid[outer.index(_num(r["outer_lr"])), inner.index(_num(r["inner_lr"]))] = r["score_mean"]
        image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", cmap=cmap, norm=norm, aspect="auto")
        for _, r in rows.iterrows():
            i, j = outer.index(_num(r["outer_lr"])), inner.index(_num(r["inner_lr"]))
            if math.isfinite(r["score_mean"]):
                text = metric.number(r["score_mean"])
                if r["diverged"] or r["failed"]:
                    text += f"\n({r['diverged'] + r['failed']}/{r['runs']} div)"
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white",
                        bbox=dict(boxstyle="round,pad=0.15", fc="black", alpha=0.35, lw=0))
            else:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="xx", ec="#c0392b", lw=0))
                ax.text(j, i, why_unscored(r), ha="center", va="center", fontsize=8,
                        color="#c0392b", weight="bold", bbox=dict(fc="white", ec="none", alpha=0.8))
        for i in range(len(outer)):
            for j in range(len(inner)):
                if not ((rows["outer_lr"].map(_num) == outer[i]) & (rows["inner_lr"].map(_num) == inner[j])).any():
                    ax.text(j, i, "not run", ha="center", va="center", fontsize=7, color="gray")
        ax.set_xticks(range(len(inner)), [f"{v:g}" for v in inner])
        ax.set_yticks(range(len(outer)), [f"{v:g}" for v in outer])
        ax.set_xlabel("inner learning rate (adaptation step size)")
        ax.set_ylabel("outer learning rate (meta step size)")
        ax.set_title(algorithm + (f"\n({describe(fixed)})" if fixed else ""), fontsize=10)
        best = best_row(rows, metric)
        unscored = int((~np.isfinite(rows["score_mean"].to_numpy(float))).sum())
        if best is not None:
            facts.append(f"{algorithm} is best at inner_lr={best['inner_lr']:g}, outer_lr={best['outer_lr']:g} "
                         f"({metric.show(best['score_mean'])}); {unscored} of {len(rows)} cells have no score")
    fig.colorbar(image, ax=list(axes), label=f"test {metric.axis}", shrink=0.9)
    fig.suptitle(f"{exp.name}: sensitivity of test {metric.word} to the learning rates "
                 f"({metric.direction})")
    stem = _save(fig, out, "sensitivity_heatmap")
    caption = ("Each cell: mean test score over seeds at that inner x outer learning rate; hatched red cells: "
               "no score, because every run diverged (non-finite training loss), failed, or ended with a NaN test "
               "score; '(k/n div)': k of n seeds "
               "diverged or failed, the score is over the others.")
    return Section("(d) Sensitivity: learning-rate grid", "; ".join(facts) + ".", caption, figure=stem)


def figure_sensitivity_curves(exp: Experiment, out: Path) -> list[Section]:
    metric = exp.metric
    sections = []
    numeric = [s for s in exp.settings if s not in ("num_tasks",) and exp.runs[s].map(_num).notna().all()
               and s not in ("ways", "shots", "query", "iterations", "eval_episodes", "test_episodes")]
    for name in numeric:
        series = []
        for algorithm in exp.algorithms():
            rows, fixed = sweep_slice(exp, algorithm, [name])
            if rows[name].map(_num).nunique() >= 2:
                series.append((algorithm, rows.assign(x=rows[name].map(_num)).sort_values("x"), fixed))
        if not series:
            continue
        fig = Figure(figsize=(7, 4.5), layout="constrained")
        ax = fig.subplots()
        any_bad = False
        values = np.concatenate([r["x"].to_numpy(float) for _, r, _ in series])
        log = values.min() > 0 and values.max() / values.min() >= 10
        for k, (algorithm, rows, fixed) in enumerate(series):
            ok = np.isfinite(rows["score_mean"].to_numpy(float))
            label = algorithm + (f" ({describe(fixed)})" if fixed else "")
            x = rows["x"] * _dodge(k, len(series)) if log else rows["x"]
            ax.errorbar(x[ok], rows["score_mean"][ok], yerr=rows["score_ci95"][ok].fillna(0), marker="o",
                        capsize=3, color=exp.color(algorithm), label=label)
            if (~ok).any():
                any_bad = True
                _mark_unscored(ax, rows[~ok], x[~ok], exp.color(algorithm))
        ax.margins(x=0.08)  # room for the labels of unscored points at the ends
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(sorted(set(values)), [f"{v:g}" for v in sorted(set(values))])
        _scale_y(ax, [v for _, r, _ in series for v in r["score_mean"]], metric)
        if any_bad:
            ax.plot([], [], "X", ms=10, color="gray", mec="#c0392b", label="no score (diverged, failed or NaN)")
        ax.set_xlabel(PRETTY.get(name, name) + (" (log scale)" if ax.get_xscale() == "log" else ""))
        ax.set_ylabel(f"test {metric.axis}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="algorithm (other fields fixed); error bars: 95% CI", title_fontsize=8)
        ax.set_title(f"{exp.name}: test {metric.word} vs {PRETTY.get(name, name)}")
        stem = _save(fig, out, f"sensitivity_{name}")
        facts = []
        for algorithm, rows, _ in series:
            best = best_row(rows, metric)
            scored = rows[np.isfinite(rows["score_mean"].to_numpy(float))]
            bad = int((~np.isfinite(rows["score_mean"].to_numpy(float))).sum())
            if best is None:
                facts.append(f"{algorithm} has no score at any {name}")
                continue
            spread = scored["score_mean"].max() - scored["score_mean"].min()
            facts.append(f"{algorithm} is best at {name}={show_value(name, best[name])} "
                         f"({metric.show(best['score_mean'])}; range over values {metric.gap(spread)}"
                         + (f", {bad} value(s) without a score" if bad else "") + ")")
        caption = (f"Test score against {name} for each algorithm whose runs vary it, with the other swept fields "
                   f"fixed at their most common value (named in the legend). Red-edged crosses at the bottom: "
                   f"settings without a score (every run diverged, failed, or ended with a NaN test score).")
        sections.append(Section(f"(d) Sensitivity to {name}", "; ".join(facts) + ".", caption, figure=stem))
    return sections


def scores_by_steps(exp: Experiment, run_ids: str) -> dict[int, tuple[float, float]]:
    """A setting's test score after each number of adaptation steps (``test_inner_steps``): mean over
    its seeds, with the 95% CI across seeds, or over test episodes for a single seed."""
    key = exp.metric.column.removeprefix("test_")  # "loss" or "accuracy"
    per_steps: dict[int, list[tuple[float, float]]] = {}
    for run_id in filter(None, str(run_ids).split(";")):
        path = exp.directory / run_id / "summary.json"
        summary = json.loads(path.read_text()) if path.is_file() else {}
        for steps, scores in (summary.get("test_by_inner_steps") or {}).items():
            mean, ci = _num(scores.get(f"{key}_mean")), _num(scores.get(f"{key}_ci95"))
            if math.isfinite(mean):
                per_steps.setdefault(int(steps), []).append((mean * exp.metric.scale, ci * exp.metric.scale))
    return {steps: pool_seeds([m for m, _ in scores], [c for _, c in scores])
            for steps, scores in sorted(per_steps.items())}


def figure_adaptation_steps(exp: Experiment, out: Path) -> Section | None:
    """Test score against the number of adaptation steps, as in Finn et al. (2017), Figure 3."""
    metric = exp.metric
    panel_field = next((f for f in ("shots", "ways") if f in exp.settings), None)
    panels = sorted(exp.groups[panel_field].map(_num).unique()) if panel_field else [None]
    curves: dict[Any, list[tuple[pd.Series, dict[int, tuple[float, float]]]]] = {}
    for panel in panels:
        rows = exp.groups if panel is None else exp.groups[exp.groups[panel_field].map(_num) == panel]
        for algorithm in exp.algorithms():
            best = best_row(rows[rows["algorithm"] == algorithm], metric)
            if best is not None:
                by_steps = scores_by_steps(exp, best["run_ids"])
                if len(by_steps) >= 2:
                    curves.setdefault(panel, []).append((best, by_steps))
    if not curves:
        return None
    fig = Figure(figsize=(4.2 * len(curves) + 1.5, 4.3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(curves), sharey=True))
    facts = []
    for ax, (panel, lines) in zip(axes, curves.items()):
        for row, by_steps in lines:
            steps = list(by_steps)
            ax.errorbar(steps, [by_steps[s][0] for s in steps], yerr=[by_steps[s][1] for s in steps],
                        marker="o", capsize=3, color=exp.color(row["algorithm"]), label=row["algorithm"],
                        ls="--" if row["algorithm"] in BASELINES else "-")
        _scale_y(ax, [v[0] for _, b in lines for v in b.values()], metric)
        counts = sorted({s for _, b in lines for s in b})
        if counts[0] > 0 and counts[-1] / counts[0] >= 10:
            ax.set_xscale("log")
            ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(counts, [str(c) for c in counts])
        ax.set_xlabel("adaptation steps at test time" + (" (log scale)" if ax.get_xscale() == "log" else ""))
        ax.grid(alpha=0.3)
        where = f"{panel_field}={show_value(panel_field, panel)}" if panel is not None else ""
        if where:
            ax.set_title(where, fontsize=10)
        most = counts[-1]
        winner = max((line for line in lines if most in line[1]), key=lambda line: metric.goodness(line[1][most][0]))
        first = min(winner[1])
        facts.append(f"{where + ': ' if where else ''}after {most} steps {winner[0]['algorithm']} is best "
                     f"({metric.show(winner[1][most][0])}, from {metric.show(winner[1][first][0])} after "
                     f"{first})")
    axes[0].set_ylabel(f"test {metric.axis}")
    axes[-1].legend(fontsize=8, title="algorithm (best setting); bars: 95% CI", title_fontsize=8)
    fig.suptitle(f"{exp.name}: test {metric.word} vs adaptation steps ({metric.direction})")
    stem = _save(fig, out, "adaptation_steps")
    caption = ("Each algorithm at its best setting" + (f" for each {panel_field}" if panel_field else "")
               + ", scored on the same test episodes after each number of adaptation steps in "
               "`test_inner_steps` (dashed: baselines). Error bars: 95% CI across seeds, or over test "
               "episodes with one seed. Finn et al. (2017), Figure 3, plots the same quantity for sine regression.")
    return Section("(f) Adaptation steps at test time", "; ".join(facts) + ".", caption, figure=stem)


def _pad_bars(ax, n: int) -> None:
    """Keep one or two bars from filling the whole plot."""
    pad = max(0.75, (3 - n) / 2 + 0.5)
    ax.set_xlim(-pad, n - 1 + pad)


def _dodge(k: int, n: int) -> float:
    """A small multiplicative shift on a log axis, so that error bars of several lines do not overlap."""
    return 10 ** (0.015 * (k - (n - 1) / 2))


def _mark_unscored(ax, rows: pd.DataFrame, x: pd.Series, color: str) -> None:
    """Settings without a score: a cross near the bottom of the axes, labelled with why."""
    ax.plot(x, [0.04] * len(rows), "X", ms=10, color=color, mec="#c0392b", transform=ax.get_xaxis_transform())
    for xi, (_, r) in zip(x, rows.iterrows()):
        ax.annotate(why_unscored(r), (xi, 0.04), xycoords=ax.get_xaxis_transform(),
                    xytext=(0, 9), textcoords="offset points", ha="center", fontsize=7, color="#c0392b")


COST_FREE = ("num_tasks", "inner_lr", "outer_lr")  # change the numbers, not the work per meta-iteration


def cost_rows(exp: Experiment) -> list[dict[str, Any]]:
    """Per algorithm: mean and 95% CI of cost over its runs that do the same work as its best setting."""
    rows = []
    for algorithm in exp.algorithms():
        head = headline(exp, algorithm)
        head = head if head is not None else exp.groups[exp.groups["algorithm"] == algorithm].iloc[0]
        runs = exp.runs[exp.runs["algorithm"] == algorithm]
        for name in exp.settings:
            if name not in COST_FREE:
                runs = runs[runs[name].astype(str) == str(head[name])]
        row = {"algorithm": algorithm, "runs": len(runs)}
        for column in ("seconds_per_iteration", "peak_memory_mb"):
            values = [v for v in runs[column] if math.isfinite(v)]
            row[column], row[f"{column}_ci95"] = results.mean_ci95(values)
        if math.isfinite(row["seconds_per_iteration"]) or math.isfinite(row["peak_memory_mb"]):
            rows.append(row)
    return rows


def figure_cost(exp: Experiment, out: Path) -> Section | None:
    rows = cost_rows(exp)
    if not rows:
        return None
    fig = Figure(figsize=(max(8, 1.6 * len(rows) + 3), 4), layout="constrained")
    axes = fig.subplots(1, 2)
    names = [r["algorithm"] for r in rows]
    colors = [exp.color(a) for a in names]
    hatches = ["//" if a in BASELINES else None for a in names]
    for ax, column, label in ((axes[0], "seconds_per_iteration", "seconds per meta-iteration"),
                              (axes[1], "peak_memory_mb", "peak memory (MB)")):
        values = [r[column] for r in rows]
        errors = [r[f"{column}_ci95"] if math.isfinite(r[f"{column}_ci95"]) else 0.0 for r in rows]
        bars = ax.bar(range(len(rows)), values, yerr=errors, capsize=4, color=colors, edgecolor="black", lw=0.6)
        for bar, hatch, value, error in zip(bars, hatches, values, errors):
            bar.set_hatch(hatch)
            if math.isfinite(value):
                ax.annotate(f"{value:.3g}", (bar.get_x() + bar.get_width() / 2, value + error), ha="center",
                            va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(range(len(rows)), names)
        _pad_bars(ax, len(rows))
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.grid(axis="y", alpha=0.3)
    if any(a in BASELINES for a in names):
        fig.legend(handles=[Patch(fc="white", ec="black", label="meta-learner"),
                            Patch(fc="white", ec="black", hatch="//", label="baseline")],
                   loc="outside lower center", ncols=2, fontsize=8)
    device = str(exp.runs["device"].iloc[0]) if "device" in exp.runs else "cpu"
    fig.suptitle(f"{exp.name}: cost per algorithm (mean over runs, error bars: 95% CI; device {device})")
    stem = _save(fig, out, "cost")
    speed = [(r["algorithm"], r["seconds_per_iteration"]) for r in rows if math.isfinite(r["seconds_per_iteration"])]
    memory = [(r["algorithm"], r["peak_memory_mb"]) for r in rows if math.isfinite(r["peak_memory_mb"])]
    facts = []
    if len(speed) == 1:
        facts.append(f"{speed[0][0]} takes {speed[0][1]:.3g} s per meta-iteration")
    elif speed:
        fast, slow = min(speed, key=lambda t: t[1]), max(speed, key=lambda t: t[1])
        facts.append(f"per meta-iteration, {fast[0]} is fastest ({fast[1]:.3g} s)"
                     + (f" and {slow[0]} slowest ({slow[1]:.3g} s, {slow[1] / fast[1]:.1f}x as long)"
                        if len(speed) > 1 else ""))
    if memory:
        low, high = min(memory, key=lambda t: t[1]), max(memory, key=lambda t: t[1])
        facts.append(f"peak memory ranges from {low[1]:.0f} MB ({low[0]}) to {high[1]:.0f} MB ({high[0]})"
                     if round(high[1]) > round(low[1]) else
                     f"peak memory is {low[1]:.0f} MB" + (" for each" if len(memory) > 1 else ""))
    counted = ", ".join(f"{r['algorithm']} {r['runs']}" for r in rows)
    caption = (f"Each bar averages the algorithm's runs that do the same work per iteration as its best setting "
               f"(learning rates and task counts may differ; runs: {counted}). Seconds per meta-iteration count "
               "training steps only (no evaluation) and grow when other jobs share the CPU. Peak memory is the GPU's "
               "peak allocation on CUDA; on CPU it is the process's peak resident memory, which includes Python "
               "and PyTorch and, when one process ran several runs one after another, the earlier ones.")
    text = "; ".join(facts)
    return Section("(e) Cost", text[:1].upper() + text[1:] + ".", caption, figure=stem)


# -------------------------------------------------------------------------------------- tables
def why_unscored(group: pd.Series) -> str:
    """Why a setting has no score: its runs diverged in training, failed, or ended with a NaN test score."""
    if group["diverged"]:
        return "diverged"
    if group["failed"]:
        return "failed"
    return "NaN test score" if group["finished"] else "no score"


def table_rows(exp: Experiment) -> list[list[str]]:
    """The results table as text cells (header first); a setting with no score says why."""
    metric = exp.metric
    header = ["algorithm", *exp.settings, f"{metric.name}{' %' if metric is ACCURACY else ''} (mean ± 95% CI)", "CI over", "s / meta-iteration",
              "peak memory (MB)", "finished", "diverged", "failed"]
    rows = [header]
    for _, g in exp.groups.iterrows():
        if math.isfinite(g["score_mean"]):
            score = f"{metric.number(g['score_mean'])} ± {metric.number(g['score_ci95'])}"
        else:
            score = why_unscored(g)
        rows.append([str(g["algorithm"]), *[show_value(s, g[s]) for s in exp.settings], score, g["ci_over"] or "–",
                     _fmt(g["seconds_per_iteration"], ".3g"), _fmt(g["peak_memory_mb"], ".0f"),
                     str(g["finished"]), str(g["diverged"]), str(g["failed"])])
    return rows


def _fmt(value: float, spec: str) -> str:
    return format(value, spec) if math.isfinite(value) else "–"


def table_section(exp: Experiment) -> Section:
    metric = exp.metric
    best = best_row(exp.groups, metric)
    counts = {s: int(exp.groups[s].sum()) for s in STATUSES}
    if best is None:
        sentence = "No run has a test score."
    else:
        sentence = f"The best setting is {label_of(exp, best)} with {metric.name} {metric.show(best['score_mean'])}"
        others = exp.groups[(exp.groups["algorithm"] != best["algorithm"])]
        runner_up = best_row(others, metric)
        if runner_up is not None:
            sentence += (f", {metric.gap(abs(best['score_mean'] - runner_up['score_mean']))} "
                         f"{'above' if metric.higher_is_better else 'below'} the best other algorithm, "
                         f"{label_of(exp, runner_up)}")
        sentence += "."
    sentence += (f" {len(exp.runs)} run{'s' if len(exp.runs) != 1 else ''}: {counts['finished']} finished, {counts['diverged']} diverged, "
                 f"{counts['failed']} failed.")
    caption = (f"One row per algorithm and setting (the fields that vary across runs: "
               f"{', '.join(exp.settings) or 'none'}). {metric.name[0].upper() + metric.name[1:]}: mean over seeds "
               f"of each run's "
               f"mean over test episodes; the 95% CI is across seed means when a setting has several seeds, else "
               f"over the single run's test episodes (column 'CI over'). A setting whose runs all diverged or "
               f"failed shows that instead of a score.")
    return Section("Results table", sentence, caption, table=table_rows(exp))


# -------------------------------------------------------------------------------------- writing
def _markdown_table(rows: list[list[str]]) -> str:
    escape = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(escape, rows[0])) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(map(escape, r)) + " |" for r in rows[1:]]
    return "\n".join(lines)


def _markdown(exp: Experiment, intro: str) -> str:
    parts = [f"# Report: {exp.name}", "", intro, ""]
    for s in exp.sections:
        parts += [f"## {s.title}", "", s.sentence, ""]
        if s.figure:
            parts += [f"![{s.title}]({s.figure}.png)", "", f"*{s.caption}* ([SVG]({s.figure}.svg))", ""]
        if s.table:
            parts += [f"*{s.caption}*", "", _markdown_table(s.table), ""]
    return "\n".join(parts)


def _html(exp: Experiment, intro: str) -> str:
    def e(text: str) -> str:
        return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(str(text)))

    body = [f"<h1>Report: {e(exp.name)}</h1>", f"<p>{e(intro)}</p>"]
    for s in exp.sections:
        body += [f"<h2>{e(s.title)}</h2>", f"<p>{e(s.sentence)}</p>"]
        if s.figure:
            body += [f'<figure><img src="{e(s.figure)}.png" alt="{e(s.title)}">'
                     f"<figcaption>{e(s.caption)}</figcaption></figure>"]
        if s.table:
            head = "".join(f"<th>{e(c)}</th>" for c in s.table[0])
            cells = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in s.table[1:])
            body += [f"<p class='caption'>{e(s.caption)}</p><table><tr>{head}</tr>{cells}</table>"]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.45}"
             "table{border-collapse:collapse;font-size:0.85em}td,th{border:1px solid #bbb;padding:3px 7px}"
             "th{background:#eee}img{max-width:100%}figcaption,.caption{font-style:italic;color:#444}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Report: {e(exp.name)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


FIGURES: tuple[Callable[[Experiment, Path], Any], ...] = (
    figure_learning_curves, figure_task_counts, figure_baselines, figure_heatmaps, figure_sensitivity_curves,
    figure_cost, figure_adaptation_steps)


def analyse(experiment_dir: Path) -> Experiment:
    """Load an experiment folder and group its runs into settings."""
    runs = load_runs(experiment_dir)
    settings = setting_fields(runs)
    metric = choose_metric(runs)
    return Experiment(Path(experiment_dir), runs, settings, summarize(runs, settings, metric), metric)


def write_report(experiment_dir: Path) -> Path:
    """Write ``<experiment_dir>/report/`` (tables, figures, report.md/html); return report.md's path."""
    exp = analyse(experiment_dir)
    out = exp.directory / "report"
    out.mkdir(parents=True, exist_ok=True)
    for stale in list(out.glob("*.png")) + list(out.glob("*.svg")):
        stale.unlink()  # a figure that no longer applies must not linger beside the new report
    exp.sections.append(table_section(exp))
    for make in FIGURES:
        made = make(exp, out)
        exp.sections.extend(made if isinstance(made, list) else [made] if made else [])
    csv_columns = ["algorithm", *exp.settings, "score_mean", "score_ci95", "ci_over", "seeds",
                   "seconds_per_iteration", "peak_memory_mb", *STATUSES, "other", "runs", "run_ids"]
    table = exp.groups[csv_columns].rename(columns={
        "score_mean": f"{exp.metric.column}_mean" + ("_pct" if exp.metric is ACCURACY else ""),
        "score_ci95": f"{exp.metric.column}_ci95" + ("_pct" if exp.metric is ACCURACY else "")})
    results.atomic_write(out / "table.csv", table.to_csv(index=False))
    results.atomic_write(out / "table.md", _markdown_table(exp.sections[0].table) + "\n")
    intro = (f"Made by `metacompare report` from {exp.directory}/runs.csv and the run folders beside it "
             f"({len(exp.runs)} run{'s' if len(exp.runs) != 1 else ''}). Score: {exp.metric.name} "
             f"({exp.metric.direction}). The table is also in "
             f"table.csv and table.md; every figure is also an SVG.")
    warning = provenance.report_warning(exp.runs.get("git_commit", []))  # runs made from uncommitted code
    intro = f"{warning}\n\n{intro}" if warning else intro
    results.atomic_write(out / "report.md", _markdown(exp, intro))
    results.atomic_write(out / "report.html", _html(exp, intro))
    return out / "report.md"


def report(results_dir: Path) -> list[Path]:
    """Report one experiment folder, or every experiment folder directly inside ``results_dir``."""
    results_dir = Path(results_dir)
    if (results_dir / "runs.csv").is_file():
        return [write_report(results_dir)]
    experiments = sorted(p for p in results_dir.glob("*/runs.csv")) if results_dir.is_dir() else []
    if not experiments:
        raise UserError(f"{results_dir}: neither an experiment folder (with runs.csv) nor a folder of them; "
                        f"give e.g. results/sine or results")
    return [write_report(p.parent) for p in experiments]
