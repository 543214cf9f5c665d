"""The answer at every budget: a comparison's table, figure and sentences over its budget rungs.

Input: one row per (algorithm, seed, rung, test episode) with the score there (:func:`metacompare.training.ladder.read`
stacked). Within each rung every algorithm is compared with the rung's best on the shared test
episodes (paired t-test, Holm-corrected over that rung's comparisons, :mod:`metacompare.report.stats`).
Time-to-target is MLPerf's measure ("time to train to a target quality"): here the smallest rung
whose score reaches the target.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
from matplotlib.ticker import NullLocator

from metacompare.report.draw import style
from metacompare.report.metric import ACCURACY, MSE, Metric
from metacompare.report.stats import aligned, holm, paired_test, pool_seeds, verdict
from metacompare.storage.results import mean_ci95

TARGET_FRACTION = 0.95  # the default target: 95% of the best final score (for an error: the best / 0.95)
BEST = "best at this budget"
UNITS = {"seconds": "s", "cpu_seconds": "CPU-s", "work": "example-passes", "iterations": "iterations"}
COLUMNS = ["budget", "rung", "algorithm", "seeds", "iterations", "train_seconds", "train_cpu_seconds", "work",
           "score", "interval", "interval_over", "floor", "difference_from_best", "p_holm", "verdict"]


def metric_of(higher_is_better: bool) -> Metric:
    return ACCURACY if higher_is_better else MSE


def table(scores: pd.DataFrame, floors: dict[str, float], bound: dict[str, float],
          higher_is_better: bool) -> pd.DataFrame:
    """One row per (rung, algorithm): score (mean over seeds of each run's mean over the test episodes),
    its 95% interval (across seeds, or over the episodes with one seed), the untrained floor, and the
    verdict against the rung's best; ``budget`` is the rung's share of ``bound``."""
    (kind, amount), = bound.items()
    rows = []
    for fraction, rung in scores.groupby("fraction", sort=True):
        cells = [_cell(name, runs, floors.get(name, math.nan)) for name, runs in rung.groupby("algorithm", sort=False)]
        cells = [c for c in cells if math.isfinite(c["score"])]
        if not cells:
            continue
        best = max(cells, key=lambda c: c["score"] if higher_is_better else -c["score"])["algorithm"]
        tests = _against_best(rung, best, [c["algorithm"] for c in cells if c["algorithm"] != best], higher_is_better)
        rows += [{"budget": amount * fraction, "rung": rung["rung"].iloc[0], **cell,
                  **tests.get(cell["algorithm"], {"difference_from_best": 0.0, "p_holm": math.nan, "verdict": BEST})}
                 for cell in cells]
    return pd.DataFrame(rows, columns=COLUMNS)


def _cell(name: str, runs: pd.DataFrame, floor: float) -> dict:
    """One algorithm at one rung, from its seeds' per-episode scores."""
    per_seed = [mean_ci95(list(group["score"])) for _, group in runs.groupby("seed", sort=True)]
    score, interval = pool_seeds([m for m, _ in per_seed], [c for _, c in per_seed])
    return {"algorithm": name, "seeds": len(per_seed), "iterations": runs["iteration"].mean(),
            **{k: runs[k].mean() for k in ("train_seconds", "train_cpu_seconds", "work")},
            "score": score, "interval": interval,
            "interval_over": "seeds" if len(per_seed) > 1 else "test episodes", "floor": floor}


def _against_best(rung: pd.DataFrame, best: str, others: list[str], higher_is_better: bool) -> dict[str, dict]:
    """Each other algorithm against ``best`` on their shared (seed, episode) pairs, Holm over the rung."""
    if not others:
        return {}
    tests = []
    for other in others:
        pair = aligned(rung, best, other, "episode")
        tests.append(paired_test(pair[best].to_numpy(), pair[other].to_numpy()))
    adjusted = holm([t["t_p"] for t in tests])
    out = {}
    for other, test, p in zip(others, tests, adjusted):
        row = SimpleNamespace(a=best, b=other, difference=test["difference"], t_p_holm=p)
        out[other] = {"difference_from_best": -test["difference"], "p_holm": p,
                      "verdict": verdict(row, higher_is_better)}
    return out


# ------------------------------------------------------------------------------------------ words
def number_words(value: float, kind: str) -> str:
    """A budget's number: ``225``, ``3,600``, ``37,500``; ``2.5e+09`` past ten million, ``0.5`` below ten."""
    return f"{value:,.0f}" if 10 <= value < 1e7 else f"{value:.3g}"


def amount_words(value: float, kind: str) -> str:
    """A rung's budget with its unit: ``225 CPU-s``, ``3.75e+04 example-passes``."""
    return f"{number_words(value, kind)} {UNITS[kind]}"


def listed(values: list[float], kind: str) -> str:
    """Several budgets, the unit once: ``225, 450 and 900 CPU-s``."""
    numbers = [number_words(v, kind) for v in values]
    head = ", ".join(numbers[:-1])
    return f"{head + ' and ' if head else ''}{numbers[-1]} {UNITS[kind]}"


def winners(frame: pd.DataFrame) -> list[dict]:
    """Per rung, smallest first: the best, and whether it beats every other algorithm significantly."""
    out = []
    for budget, rung in frame.groupby("budget", sort=True):
        best = rung[rung["verdict"] == BEST].iloc[0]["algorithm"]
        others = rung[rung["verdict"] != BEST]
        out.append({"budget": budget, "winner": best,
                    "clear": bool(len(others)) and all(v == f"{best} beats {o}" for v, o in
                                                       zip(others["verdict"], others["algorithm"]))})
    return out


def winner_words(frame: pd.DataFrame, kind: str) -> str:
    """Which algorithm is best at which budgets, where the winner changes, and where its lead over
    another algorithm is not significant (paired over the test episodes, Holm within the budget)."""
    ranks = winners(frame)
    if len(ranks) < 2:  # the full budget alone: the answer above says it all
        return ""
    spans = [[ranks[0]]]
    for rank in ranks[1:]:
        if rank["winner"] == spans[-1][-1]["winner"]:
            spans[-1].append(rank)
        else:
            spans.append([rank])
    parts = [f"{span[0]['winner']} at {amount_words(span[0]['budget'], kind)}" if len(span) == 1 else
             f"{span[0]['winner']} from {number_words(span[0]['budget'], kind)} to "
             f"{amount_words(span[-1]['budget'], kind)}" for span in spans]
    text = f"Best at every budget (snapshots of the same runs, on the same test episodes): {'; '.join(parts)}"
    changes = [span[0]["budget"] for span in spans[1:]]
    text += f"; the winner changes at {listed(changes, kind)}." if changes else "; the winner never changes."
    unclear = [r["budget"] for r in ranks if not r["clear"] and (frame["budget"] == r["budget"]).sum() > 1]
    if unclear:
        where = "any budget" if len(unclear) == len(ranks) else listed(unclear, kind)
        text += f" The best is not significantly ahead of every other algorithm at {where}."
    return text + _missing(frame, kind)


def _missing(frame: pd.DataFrame, kind: str) -> str:
    """The algorithms scored at the full budget but not below it (runs that kept no snapshots)."""
    top = frame["budget"].max()
    everyone = set(frame.loc[frame["budget"] == top, "algorithm"])
    lacking = sorted(everyone - set(frame.loc[frame["budget"] < top, "algorithm"]))
    if not lacking:
        return ""
    return (f" Not scored below {amount_words(top, kind)}: {', '.join(lacking)} (runs finished without "
            f"snapshots; delete them to retrain with the ladder).")


def target_of(frame: pd.DataFrame, higher_is_better: bool, target: float | None) -> tuple[float, str]:
    """The target score and how it was chosen: ``target`` as given, or 95% of the best score at the top
    rung (an error: the best divided by 0.95)."""
    metric = metric_of(higher_is_better)
    if target is not None:
        return target, f"{metric.word} {'≥' if higher_is_better else '≤'} {metric.show(target * metric.scale)}"
    top = frame[frame["budget"] == frame["budget"].max()]["score"]
    best = top.max() if higher_is_better else top.min()
    value = best * TARGET_FRACTION if higher_is_better else best / TARGET_FRACTION
    share = f"{100 * TARGET_FRACTION:g}% of" if higher_is_better else f"1/{TARGET_FRACTION:g} of"
    return value, (f"{metric.word} {'≥' if higher_is_better else '≤'} {metric.show(value * metric.scale)}, "
                   f"{share} the best final score")


def time_to_target(frame: pd.DataFrame, target: float, higher_is_better: bool) -> dict[str, float]:
    """Per algorithm, the smallest rung budget whose score reaches ``target`` (NaN: none does)."""
    reached = frame["score"] >= target if higher_is_better else frame["score"] <= target
    out = {}
    for name, rows in frame.groupby("algorithm", sort=False):
        hits = rows[reached.loc[rows.index]]
        out[name] = float(hits["budget"].min()) if len(hits) else math.nan
    return out


def target_words(frame: pd.DataFrame, kind: str, higher_is_better: bool, target: float | None = None) -> str:
    """Time-to-target of every algorithm, fastest first, as MLPerf reports it."""
    if frame["budget"].nunique() < 2:
        return ""
    value, how = target_of(frame, higher_is_better, target)
    times = time_to_target(frame, value, higher_is_better)
    top = amount_words(frame["budget"].max(), kind)
    order = sorted(times, key=lambda name: (math.isnan(times[name]), times[name]))
    parts = [f"{name} {amount_words(times[name], kind)}" if math.isfinite(times[name]) else f"{name} not within {top}"
             for name in order]
    return f"Time to target ({how}; the smallest budget that reaches it): {', '.join(parts)}."


def shown(frame: pd.DataFrame, kind: str, higher_is_better: bool) -> pd.DataFrame:
    """``budgets.csv`` as the report prints it: budgets with their unit, scores with theirs, the interval
    with what it is over, and each verdict with its Holm-adjusted p-value (none for the best)."""
    metric = metric_of(higher_is_better)
    score = lambda v: metric.show(v * metric.scale)  # noqa: E731
    return pd.DataFrame({
        "budget": [amount_words(b, kind) for b in frame["budget"]], "algorithm": frame["algorithm"],
        "iterations": [f"{v:.0f}" for v in frame["iterations"]],
        "score": [score(v) for v in frame["score"]],
        "95% interval": [f"± {metric.gap(i * metric.scale)} ({over})" if math.isfinite(i) else f"n/a ({over})"
                         for i, over in zip(frame["interval"], frame["interval_over"])],
        "floor": [score(v) for v in frame["floor"]],
        "against the best": [v if not math.isfinite(p) else f"{v} (p = {p:.3g})"
                             for v, p in zip(frame["verdict"], frame["p_holm"])]})


# ------------------------------------------------------------------------------------------ figure
def figure(frame: pd.DataFrame, out: Path, kind: str, higher_is_better: bool, stem: str = "budgets") -> str | None:
    """``<out>/budgets.png`` and ``.svg``: test score against the rung budget (log axis), one line per
    algorithm with its 95% interval, each algorithm's untrained floor dotted in its colour."""
    if frame.empty:
        return None
    metric = metric_of(higher_is_better)
    names = list(dict.fromkeys(frame["algorithm"]))
    with style.styled():
        fig = style.figure(7.5, 4.2)
        ax = fig.subplots()
        lows, highs = [], []
        for k, name in enumerate(names):
            rows = frame[frame["algorithm"] == name].sort_values("budget")
            y = rows["score"].to_numpy(float) * metric.scale
            half = np.nan_to_num(rows["interval"].to_numpy(float) * metric.scale)
            low, high = metric.clip(y - half), metric.clip(y + half)
            x = rows["budget"].to_numpy(float) * style.dodge(k, len(names))
            ax.errorbar(x, y, yerr=np.vstack([y - low, high - y]), marker="o", ms=4, capsize=3,
                        color=style.color(names, name), label=name)
            floor = rows["floor"].iloc[0] * metric.scale
            if math.isfinite(floor):
                ax.axhline(floor, color=style.color(names, name), ls=":", lw=1)
            lows += [*low, floor]
            highs += [*high, floor]
        ax.plot([], [], ":", color="gray", label="untrained network (floor)")
        ax.set_xscale("log", base=2)
        rungs = sorted(set(frame["budget"]))
        ax.set_xticks(rungs, [amount_words(b, kind).split(" ")[0] for b in rungs])
        ax.xaxis.set_minor_locator(NullLocator())
        style.bound_y(ax, lows, highs, metric)
        ax.grid(True)
        ax.set_xlabel(f"training budget ({UNITS[kind]}, log scale)")
        ax.set_ylabel(f"test {metric.axis}")
        ax.legend(fontsize=8)
        ax.set_title(f"Test {metric.word} at every budget ({metric.direction}); bars: 95% interval")
        return style.save(fig, out, stem)
