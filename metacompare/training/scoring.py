"""Scoring on fixed episodes: validation, the test, the untrained floor and the common procedure.

Every algorithm of a comparison is scored on the very same episodes (``data.build_tasks`` draws them
from ``eval_seed`` alone) with its own published test procedure, and, when the config names one, with
a common procedure as well. The *floor* is the untrained initial network scored the same way: the gain
from meta-training is the difference. One rule gives a dataset's headline score: accuracy for
classification, mean squared error for regression (``score_key``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from metacompare.engines import batch_eval, distributed

from metacompare.storage import results
from metacompare.config.loading import RunConfig
from metacompare.data import Task
from metacompare.data.source import classifies


def score_key(cfg: RunConfig) -> str:
    """The summary statistic that ranks runs: ``accuracy`` (higher is better) or ``loss`` (MSE, lower)."""
    return "accuracy" if classifies(cfg) else "loss"


def floor_count(cfg: RunConfig) -> int:
    """How many episodes score the untrained floor and the training-task gap: the first
    ``floor_episodes`` test episodes (and fresh training-class episodes), all ``test_episodes`` when 0.
    Both are references, not the answer, so fewer episodes (a wider, stated interval) buy back scoring
    time; the floor's episodes stay the test's first ones, so every run is paired with its floor on them."""
    return min(cfg.floor_episodes or cfg.test_episodes, cfg.test_episodes)


def better(cfg: RunConfig, new: float, old: float | None) -> bool:
    """Is validation score ``new`` better than ``old`` for this dataset?"""
    if old is None or math.isnan(old):
        return not math.isnan(new)
    return new > old if classifies(cfg) else new < old


def evaluate(algorithm, episodes: list[Task], steps: int, device: torch.device, dtype: torch.dtype,
             procedure=None, per_episode: list | None = None) -> dict[str, float]:
    """Mean and 95% CI of query loss/accuracy over fixed episodes; per-episode values are appended
    to ``per_episode`` as ``(loss, accuracy)`` when a list is given."""
    mine = range(*distributed.bounds(len(episodes)))  # a distributed run's ranks share the episodes
    chunk = algorithm.cfg.eval_batch
    scores = []
    for start in range(mine.start, mine.stop, chunk or 1):
        indices = range(start, min(start + (chunk or 1), mine.stop))
        tasks = [episodes[index].to(device, dtype) for index in indices]
        # Mini-batch order at test time is seeded per episode: every algorithm, checkpoint and floor
        # sees the same shuffles, looped or batched (eval_batch: that many episodes at once).
        generators = [torch.Generator().manual_seed(index) for index in indices]
        stacked = batch_eval.stacked_scores(algorithm, tasks, steps, procedure, generators) if chunk else None
        if stacked is None:
            stacked = [algorithm.evaluate(t, steps, procedure, g) for t, g in zip(tasks, generators)]
        scores.extend(stacked)
    scores = distributed.gather(scores)  # back in episode order on every rank
    losses, accuracies = [loss for loss, _ in scores], [acc for _, acc in scores if acc is not None]
    if per_episode is not None:
        per_episode.extend(scores)
    loss_mean, loss_ci = results.mean_ci95(losses)
    acc_mean, acc_ci = results.mean_ci95(accuracies) if accuracies else (math.nan, math.nan)
    return {"loss_mean": loss_mean, "loss_ci95": loss_ci, "accuracy_mean": acc_mean, "accuracy_ci95": acc_ci}


def procedures(cfg: RunConfig) -> dict[str, tuple[Any, int]]:
    """The named test procedures of a run: its own (``own``) and the config's common one (``common``)."""
    named = {"own": (None, cfg.eval_inner_steps)}
    if cfg.common_evaluation is not None:
        named["common"] = (cfg.common_evaluation, cfg.common_evaluation.steps)
    return named


def score_test(algorithm, episodes: list[Task], cfg: RunConfig, device, dtype, prefix: str,
               episode_columns: dict[str, list]) -> dict[str, float]:
    """Test scores under every procedure, flattened as ``{prefix}{procedure}_{stat}`` (``own`` is
    written without its name), with per-episode columns added to ``episode_columns``."""
    flat = {}
    for name, (procedure, steps) in procedures(cfg).items():
        rows: list = []
        stats = evaluate(algorithm, episodes, steps, device, dtype, procedure, rows)
        label = prefix if name == "own" else f"{prefix}{name}_"
        flat.update({f"{label}{k}": v for k, v in stats.items()})
        episode_columns[f"{label}loss"] = [loss for loss, _ in rows]
        if classifies(cfg):
            episode_columns[f"{label}accuracy"] = [acc for _, acc in rows]
    return flat
