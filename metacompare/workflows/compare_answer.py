"""The answer paragraph of a comparison's report: which algorithm is best under the budget, by how
much, at what cost and how sure, in words, from the tables :mod:`metacompare.workflows.compare` computed."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from metacompare.workflows import headline


def answer(table: pd.DataFrame, pairs: pd.DataFrame | None, seed_pairs: pd.DataFrame | None,
           higher_is_better: bool, name: str, bound: dict, percent: bool,
           against_floor: pd.DataFrame | None = None, learned_at: dict[str, list[str]] | None = None) -> str:
    """The first paragraph: which is best, by how much, at what cost, how sure; opened by
    :func:`metacompare.workflows.headline.opening` where the best did not learn (``against_floor``: per-episode
    scores and floors, :func:`metacompare.workflows.headline.floor_pairs`; ``learned_at``: :func:`metacompare.workflows.compare.learned_at`) or is
    no better than pre-training."""
    scored = table[np.isfinite(table["score"])]
    if scored.empty:
        return "**Answer: none.** No algorithm finished a run under this budget; see the table below."
    ranked = scored.sort_values("score", ascending=not higher_is_better)
    best = ranked.iloc[0]
    show = (lambda v: f"{100 * v:.2f}%") if percent else (lambda v: f"{v:.4g}")
    gap = (lambda v: f"{100 * v:.2f} points") if percent else (lambda v: f"{v:.4g}")
    tests = headline.floor_tests(against_floor, higher_is_better) if against_floor is not None else {}
    baseline = _pair(pairs, best["algorithm"], headline.BASELINE) if pairs is not None else None
    opening = headline.opening(best["algorithm"], tests, baseline, bound, show, gap, learned_at)
    lead = opening or f"**Answer: {best['algorithm']}.**"
    text = [f"{lead} Under the same budget of {budget_words(bound)} per run, "
            f"{best['algorithm']} reaches {name} {show(best['score'])} {_spread(best, gap)}; "
            f"untrained network: {show(best['floor'])}), "
            f"after {best['iterations_done']:.0f} meta-iterations, {_seconds_words(best)} of training "
            f"and {best['work']:,.0f} example-passes."]
    if len(ranked) > 1:
        runner_up = ranked.iloc[1]
        text.append(f"Next is {runner_up['algorithm']} at {show(runner_up['score'])} {_spread(runner_up, gap)}; "
                    f"{runner_up['iterations_done']:.0f} iterations).")
        text.append(_sureness(best["algorithm"], runner_up["algorithm"], pairs, seed_pairs, gap))
    return " ".join(text)


ONE_SEED = "1 seed: no spread across seeds"


def _spread(row, gap) -> str:
    """The opening of a score's parenthesis: its 95% CI across seeds, or, from one finished seed, that
    there is no spread to give (a Student-t interval needs two)."""
    if int(row["finished"]) < 2:
        return f"({ONE_SEED}"
    return f"± {gap(row['score_ci95'])} (95% CI across {int(row['finished'])} seeds"


def _seconds_words(row) -> str:
    """Training time on the wall clock, and in CPU time where it was measured."""
    cpu = row.get("train_cpu_seconds", math.nan)
    return f"{row['train_seconds']:.0f} s" + (f" ({cpu:.0f} CPU-s)" if cpu == cpu else "")


def budget_words(bound: dict) -> str:
    """The budget per run in words: training seconds, CPU seconds or example-passes."""
    if "seconds" in bound:
        return f"{bound['seconds']:g} training second{'' if bound['seconds'] == 1 else 's'}"
    if "cpu_seconds" in bound:
        return f"{bound['cpu_seconds']:g} training second{'' if bound['cpu_seconds'] == 1 else 's'} of CPU time"
    return f"{bound['work']:,.0f} example-pass{'' if bound['work'] == 1 else 'es'} of work"


def _sureness(best: str, other: str, pairs: pd.DataFrame | None, seed_pairs: pd.DataFrame | None, gap) -> str:
    """How sure: the paired difference of the top two on shared episodes, and the seed-level test."""
    if pairs is None:
        return ("How sure: paired statistics are not available in this installation "
                "(metacompare.report.stats is missing); compare the intervals in the table.")
    row = _pair(pairs, best, other)
    if row is None:
        return "How sure: the top two share no test episodes to compare."
    sign = 1 if row["a"] == best else -1
    words = (f"How sure: on the {int(row['n'])} shared (seed, episode) pairs {best} minus {other} is "
             f"{gap(sign * row['difference'])} ± {gap(row['difference_ci95'])} (paired t, Holm-corrected "
             f"p = {row['t_p_holm']:.3g}; Wilcoxon p = {row['wilcoxon_p_holm']:.3g}): {row['verdict']}.")
    seed_row = _pair(seed_pairs, best, other) if seed_pairs is not None else None
    if seed_row is not None and seed_row["n"] < 2:
        words += (" Across seeds: one seed each, so training noise is not tested "
                  "(run with --seeds 3 or more for that).")
    elif seed_row is not None:
        words += (f" Across seeds (n = {int(seed_row['n'])}, the test of training noise): {seed_row['verdict']} "
                  f"(p = {seed_row['t_p_holm']:.3g}).")
    return words


def _pair(pairs: pd.DataFrame, a: str, b: str) -> pd.Series | None:
    match = pairs[((pairs["a"] == a) & (pairs["b"] == b)) | ((pairs["a"] == b) & (pairs["b"] == a))]
    return None if match.empty else match.iloc[0]
