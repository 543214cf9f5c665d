"""How far a budget rung's snapshot lands from a run of its own at that budget.

A rung of `compare`'s budget ladder is a snapshot of the longer run (metacompare.training.ladder). Where a
schedule follows the fraction of the budget spent (Reptile's meta-step annealed to 0, a cosine outer
rate), the snapshot is taken mid-schedule, while a run of its own at the rung's budget would have
finished its schedule. For each setting and seed this trains the longer run under ``--budget`` with
compare's five rungs, then the run of its own at ``--rung`` of that budget (the same config and seed:
the same initial weights and training tasks; :func:`metacompare.training.ladder.rung_config`), and compares
their test scores paired over the same test episodes (:func:`metacompare.report.stats.paired_test`)
and across seeds (:func:`metacompare.report.stats.pairwise`). A work budget keeps both deterministic.
Also recorded: the seconds the ladder's snapshot scoring took beside the longer run's training.

Written to ``--out``: ``deviation.csv`` (one row per setting and seed), ``episodes.csv`` (the paired
per-episode scores), ``paired_seeds.csv`` and ``conditions.txt``; the runs themselves go to a
temporary folder unless ``--runs`` names one (a rerun then skips the finished ones).

    PYTHONPATH=. python experiments/ladder_deviation.py --budget work:2e6 --rung 1/4 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

from metacompare.training import budget

from metacompare.storage import provenance
from metacompare.config.loading import load_experiment, with_overrides
from metacompare.training.ladder import rung_config, rung_name
from metacompare.report.stats import paired_test, pairwise
from metacompare.training.runner import run_dir, train_and_evaluate

# The schedules a rung can catch mid-way, and a control with none (configs/sine.yaml otherwise).
SETTINGS = {
    "reptile-annealed": ("reptile", {"outer_lr_final": 0.0}),      # Reptile's meta-step, linearly to 0
    "fomaml-cosine": ("fomaml", {"outer_lr_schedule": "cosine"}),  # outer Adam along a cosine to 0
    "fomaml-constant": ("fomaml", {}),                             # no schedule follows the budget
}
RUNGS = 5  # compare's default ladder: 1/16, 1/8, 1/4, 1/2 and the full budget


def scores(folder: Path, name: str, rung: str | None) -> pd.Series:
    """Per-episode scores of a finished run: a rung of its ``rungs.csv``, or its own ``episodes.csv``."""
    if rung is None:
        return pd.read_csv(folder / "episodes.csv", float_precision="round_trip")[name]
    rows = pd.read_csv(folder / "rungs.csv", float_precision="round_trip")
    return rows[rows["rung"] == rung].reset_index()[name]


def compare_one(cfg, fraction: float) -> tuple[dict, pd.DataFrame]:
    """Train ``cfg`` with the ladder and the rung's run of its own; their paired test comparison."""
    longer_cfg = with_overrides(cfg, budget_rungs=RUNGS)
    own_cfg = with_overrides(rung_config(cfg, fraction), budget_rungs=0)
    longer, own = train_and_evaluate(longer_cfg, progress=False), train_and_evaluate(own_cfg, progress=False)
    column, rung = ("test_accuracy" if cfg.is_classification else "test_loss"), rung_name(fraction)
    snapshot, alone = scores(run_dir(longer_cfg), column, rung), scores(run_dir(own_cfg), column, None)
    test = paired_test(snapshot.to_numpy(), alone.to_numpy())
    iterations = pd.read_csv(run_dir(longer_cfg) / "rungs.csv").query("rung == @rung")["iteration"].iloc[0]
    row = {"rung": rung, "iterations_snapshot": int(iterations), "iterations_own": own["iterations_done"],
           "score_snapshot": snapshot.mean(), "score_own": alone.mean(), "episodes": test["n"],
           "snapshot_minus_own": test["difference"], "ci95": test["difference_ci95"], "t_p": test["t_p"],
           "wilcoxon_p": test["wilcoxon_p"], "train_seconds_longer": longer["train_seconds"],
           "wall_seconds_longer": longer["wall_time_s"], "snapshot_test_seconds": longer["rung_test_seconds"],
           "snapshots_scored": RUNGS - 1}
    return row, pd.DataFrame({"episode": range(len(alone)), "snapshot": snapshot, "own": alone})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/sine.yaml")
    parser.add_argument("--budget", default="work:2e6", help="the longer run's budget (compare's --budget form)")
    parser.add_argument("--rung", default="1/4", choices=["1/2", "1/4", "1/8", "1/16"])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--test-episodes", type=int, default=200)
    parser.add_argument("--runs", help="folder for the runs (default: a temporary one)")
    parser.add_argument("--out", default="results/ladder_deviation")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out, fraction = Path(args.out), 1 / int(args.rung.split("/")[1])
    state = provenance.guard([out])  # a recorded result must come from committed code
    out.mkdir(parents=True, exist_ok=True)
    runs_dir = args.runs or tempfile.mkdtemp(prefix="ladder_deviation_")
    bound = budget.parse_budget(args.budget)
    configs = {c.algorithm: c for c in load_experiment(args.config)}
    rows, episodes = [], []
    (out / "conditions.txt").write_text(
        f"config {args.config}, longer run {args.budget} with {RUNGS} rungs, rung {args.rung}, seeds {args.seeds}, "
        f"settings {args.settings}, {args.test_episodes} test episodes, one torch thread, CPU\n"
        f"commit {state.label()}, torch {torch.__version__}, Python {platform.python_version()}\n")
    for seed in args.seeds:  # every setting at one seed, then the next seed
        for setting in args.settings:
            algorithm, changes = SETTINGS[setting]
            cfg = with_overrides(configs[algorithm], **changes, seed=seed, iterations=10**9, results_dir=runs_dir,
                                 experiment="ladder_deviation", test_episodes=args.test_episodes,
                                 budget={"seconds": None, "cpu_seconds": None, "work": None, **bound})
            row, paired = compare_one(cfg, fraction)
            rows.append({"setting": setting, "seed": seed, **row})
            episodes.append(paired.assign(setting=setting, seed=seed))
            write(out, rows, episodes, configs)  # after each pair: a stopped script keeps what it measured
            print(f"{setting:17s} seed {seed}: snapshot {row['score_snapshot']:.4f} ({row['iterations_snapshot']} its), "
                  f"own run {row['score_own']:.4f} ({row['iterations_own']} its), difference "
                  f"{row['snapshot_minus_own']:+.4f} ± {row['ci95']:.4f} (p = {row['t_p']:.3g})", flush=True)
    print(f"written: {out}/deviation.csv, episodes.csv, paired_seeds.csv, conditions.txt")


def write(out: Path, rows: list[dict], episodes: list[pd.DataFrame], configs: dict) -> None:
    """The tables so far: per (setting, seed), per episode, and snapshot against own run across seeds."""
    table = pd.DataFrame(rows)
    table.to_csv(out / "deviation.csv", index=False)
    pd.concat(episodes, ignore_index=True).to_csv(out / "episodes.csv", index=False)
    across_seeds(table, next(iter(configs.values())).is_classification).to_csv(out / "paired_seeds.csv", index=False)


def across_seeds(table: pd.DataFrame, higher_is_better: bool) -> pd.DataFrame:
    """Per setting, snapshot against own run over the seeds' mean scores (a paired test across seeds)."""
    frames = []
    for setting, group in table.groupby("setting", sort=False):
        long = pd.concat([pd.DataFrame({"algorithm": f"{setting} {kind}", "seed": group["seed"], "episode": 0,
                                        "score": group[f"score_{kind}"]}) for kind in ("snapshot", "own")])
        frames.append(pairwise(long, "seed", higher_is_better))
    return pd.concat(frames, ignore_index=True)


if __name__ == "__main__":
    sys.exit(main())
