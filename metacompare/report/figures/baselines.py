"""Each algorithm at its best setting as bars: meta-learners against the no-meta-learning baselines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from metacompare.report.draw import style
from metacompare.report.experiment import Experiment, Section
from metacompare.report.figures.common import colour, figure_section, is_baseline, published_value, with_band
from metacompare.report.published import reference_note
from metacompare.report.select import best_row, headlines, label_of


def data(exp: Experiment) -> pd.DataFrame | None:
    """One row per algorithm (its best setting): score, clipped band, label, baseline flag, published mark."""
    rows = headlines(exp)
    if not rows:
        return None
    frame = pd.DataFrame(rows).reset_index(drop=True)
    frame["label"] = [label_of(exp, r) for r in rows]
    frame["baseline"] = frame["algorithm"].map(is_baseline)
    frame["published"] = [published_value(r) for r in rows]
    return with_band(frame.rename(columns={"score_mean": "mean", "score_ci95": "ci95"}), exp.metric.upper)


def draw(frame: pd.DataFrame, exp: Experiment) -> Figure:
    metric = exp.metric
    fig = style.figure(max(5.5, 1.3 * len(frame) + 2), 4.5)
    ax = fig.subplots()
    for i, row in frame.iterrows():
        ax.bar(i, row["mean"], yerr=[[row["mean"] - row["low"]], [row["high"] - row["mean"]]], capsize=4,
               color=colour(exp, row["algorithm"]), hatch=style.BASELINE_HATCH if row["baseline"] else None,
               edgecolor="black", lw=0.6)
        if np.isfinite(row["published"]):
            ax.plot(i, row["published"], marker="_", ms=30, mew=2.5, color="black")
            ax.annotate(f"{row['published']:g}", (i, row["published"]), xytext=(17, 0), textcoords="offset points",
                        va="center", fontsize=8)
    ax.set_xticks(range(len(frame)), [s.replace(" (", "\n").replace(", ", "\n").rstrip(")") for s in frame["label"]],
                  fontsize=8)
    _bound(ax, frame, metric)
    ax.set_ylabel(f"test {metric.axis}")
    ax.grid(True, axis="y")
    _legend(fig, ax, frame)
    ax.set_xlabel("algorithm, at its best setting (error bars: 95% CI)")
    style.pad_bars(ax, len(frame))
    ax.set_title(f"{exp.name}: {_what(frame)}, test {metric.word} ({metric.direction})")
    return fig


def _bound(ax, frame: pd.DataFrame, metric) -> None:
    """Error bars start at 0; accuracy bars may start up to 10 points below the lowest band."""
    marks = list(frame["published"])
    style.bound_y(ax, [*frame["low"], *marks], [*frame["high"], *marks], metric)
    if ax.get_yscale() == "linear":
        ax.set_ylim(bottom=max(0.0, frame["low"].min() - 10) if metric.higher_is_better else 0.0)


def _legend(fig: Figure, ax, frame: pd.DataFrame) -> None:
    handles = []
    if frame["baseline"].any():
        handles += [Patch(facecolor="white", edgecolor="black", label="meta-learner"),
                    Patch(facecolor="white", edgecolor="black", hatch=style.BASELINE_HATCH,
                          label="baseline (no meta-learning)")]
    if frame["published"].notna().any():
        handles.append(ax.plot([], [], marker="_", ms=15, mew=2.5, color="black", ls="none",
                               label="published test accuracy, full benchmark (source in caption)")[0])
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8)


def _what(frame: pd.DataFrame) -> str:
    return "meta-learners vs baselines" if frame["baseline"].any() else "algorithms compared"


def prose(frame: pd.DataFrame, exp: Experiment) -> tuple[str, str]:
    metric = exp.metric
    scores = frame.rename(columns={"mean": "score_mean"})
    best = best_row(scores, metric)
    if frame["baseline"].any():
        meta, base = best_row(scores[~scores["baseline"]], metric), best_row(scores[scores["baseline"]], metric)
        if meta is None or base is None:
            text = f"{best['algorithm']} is best ({metric.show(best['score_mean'])})."
        else:
            verb = "beats" if metric.better(meta["score_mean"], base["score_mean"]) else "trails"
            text = (f"The best meta-learner, {meta['algorithm']} ({metric.show(meta['score_mean'])}), {verb} the best "
                    f"baseline, {base['algorithm']} ({metric.show(base['score_mean'])}), by "
                    f"{metric.gap(abs(meta['score_mean'] - base['score_mean']))}.")
    elif len(scores) > 1:
        worst = scores.loc[scores["score_mean"].map(metric.goodness).idxmin()]
        text = (f"{best['algorithm']} is best ({metric.show(best['score_mean'])}) and {worst['algorithm']} worst "
                f"({metric.show(worst['score_mean'])}), {metric.gap(abs(best['score_mean'] - worst['score_mean']))} "
                f"apart.")
    else:
        text = f"{best['algorithm']} scores {metric.show(best['score_mean'])}."
    caption = ("Each algorithm at its best setting (named under its bar)"
               + ("; hatched bars are baselines (pretrain: supervised pre-training + fine-tuning; scratch: "
                  "trained on the support set only)" if frame["baseline"].any() else "")
               + ". Error bars: 95% CI across seeds, or over test episodes with one seed."
               + reference_note(headlines(exp)))
    return text, caption


def section(exp: Experiment, out: Path) -> Section | None:
    frame = data(exp)
    if frame is None:
        return None
    stem = "baselines" if frame["baseline"].any() else "algorithms"
    title = "Meta-learners vs baselines" if frame["baseline"].any() else "Algorithms compared"
    return figure_section(exp, out, frame, stem, title, draw, prose)
