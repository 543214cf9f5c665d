"""Result folders for the report tests, written as the runner writes them."""

from __future__ import annotations

import math

from metacompare.storage import results
from metacompare.config.loading import RunConfig, dump

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T1 = 12.706204736174694  # Student-t 0.975 quantile, 1 degree of freedom (tables: 12.706)
OMNIGLOT = dict(experiment="omni", dataset="omniglot", model="conv4", ways=5, shots=1, query=5, inner_lr=0.4,
                outer_lr=0.001, iterations=30, test_episodes=100)


def add_run(exp_dir, status="finished", accuracy=None, ci=0.01, curve=(), files=True, seconds=0.5, **fields):
    """Write one run as the runner would: config.yaml, metrics.csv, summary.json and its runs.csv row."""
    cfg = RunConfig(**{**OMNIGLOT, **fields})
    regression = cfg.dataset == "sine"
    summary = {**cfg.to_dict(), "run_id": cfg.run_id(), "status": status,
               "iterations_done": cfg.iterations if status == "finished" else 7,
               "diverged_at": 7 if status == "diverged" else None,
               "test_accuracy_mean": math.nan if regression or accuracy is None else accuracy,
               "test_accuracy_ci95": math.nan if regression or accuracy is None else ci,
               "test_loss_mean": accuracy if regression and accuracy is not None else math.nan,
               "test_loss_ci95": ci if regression else math.nan,
               "seconds_per_iteration": seconds if status != "failed" else math.nan,
               "peak_memory_mb": 500.0 if status != "failed" else math.nan,
               "error": "RuntimeError: boom" if status == "failed" else ""}
    if files:
        run = exp_dir / cfg.run_id()
        results.atomic_write(run / "config.yaml", dump(cfg))
        prefix = "val_loss" if regression else "val_accuracy"
        rows = [{"iteration": it, "wall_time_s": 2.0 * it, "train_loss": 1.0, f"{prefix}_mean": value,
                 f"{prefix}_ci95": 0.05} for it, value in curve]
        results.write_csv(run / "metrics.csv", rows)
        results.save_json(run / "summary.json", summary)
    results.record_run(exp_dir, summary)
    return cfg
