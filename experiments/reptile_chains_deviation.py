"""How far Reptile with several carried Adam chains (``inner_chains``, what lets it run on processes)
lands from supervised-reptile's one serial chain, at equal iterations (issue 23).

Each seed trains configs/omniglot_minimal.yaml's Reptile protocol for ``--iterations`` outer steps
(meta-step 1 annealed to 0 over them), once per mode, from the same initial weights and on the same
sequence of training tasks (both come from the seed), so the modes differ only in how Adam's state is
carried; then each is scored with its own test procedure (50 Adam steps, batch 5) on the first
``--episodes`` of the fixed test episodes, the same for every mode. Printed: accuracy per mode and seed,
the paired difference from the serial chain, and CPU seconds per iteration (one thread, one process).
With ``--csv`` each finished (mode, seed) is appended there at once and a rerun skips what it holds.

    PYTHONPATH=. nice -n 10 python experiments/reptile_chains_deviation.py --iterations 300 --episodes 60 \
        --modes serial chains2 --csv reptile_chains.csv
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import statistics
import sys
import time

import torch

from metacompare import precision, scoring
from metacompare.build import build_run
from metacompare.config import load_experiment

MODES = {"serial": {}, "chains2": {"inner_chains": 2}, "chains5-batched": {"inner_chains": 5, "batch_tasks": True},
         "chains2-batched": {"inner_chains": 2, "batch_tasks": True}}


def train_and_score(cfg, episodes: int) -> tuple[float, float, list[float]]:
    """Test accuracy, CPU seconds per iteration, and per-episode accuracies."""
    run = build_run(cfg)
    algorithm, tasks = run.algorithm, run.tasks
    cpu = time.process_time()
    for iteration in range(cfg.iterations):
        batch = [precision.prepare_task(tasks.train.sample().to(run.device, run.dtype), cfg)
                 for _ in range(cfg.meta_batch_size)]
        algorithm.set_outer_lr(iteration / cfg.iterations)
        algorithm.meta_train_step(batch)
    per_iteration = (time.process_time() - cpu) / cfg.iterations
    rows: list = []
    scores = scoring.evaluate(algorithm, tasks.test[:episodes], cfg.eval_inner_steps, run.device, run.dtype,
                              per_episode=rows)
    return scores["accuracy_mean"], per_iteration, [acc for _, acc in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/omniglot_minimal.yaml")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--episodes", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--modes", nargs="+", default=["serial", "chains2", "chains5-batched"], choices=list(MODES))
    parser.add_argument("--csv", help="also write one row per (mode, seed) here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = next(c for c in load_experiment(args.config) if c.algorithm == "reptile")
    base = dataclasses.replace(base, iterations=args.iterations, test_episodes=max(args.episodes, 1),
                               eval_episodes=1)
    found: dict[tuple[str, int], tuple[float, float]] = {}
    columns = ["mode", "seed", "iterations", "episodes", "test_accuracy", "cpu_s_per_iteration"]
    if args.csv and os.path.exists(args.csv):
        with open(args.csv, newline="") as handle:
            for row in csv.DictReader(handle):
                if (int(row["iterations"]), int(row["episodes"])) == (args.iterations, args.episodes):
                    found[row["mode"], int(row["seed"])] = (float(row["test_accuracy"]), float(row["cpu_s_per_iteration"]))
    for seed in args.seeds:
        for mode in args.modes:
            if (mode, seed) in found:
                continue
            cfg = dataclasses.replace(base, seed=seed, **MODES[mode])
            acc, rate, _ = train_and_score(cfg, args.episodes)
            found[mode, seed] = (acc, rate)
            print(f"seed {seed} {mode:16s} accuracy {100 * acc:6.2f}%  {rate:.3f} CPU-s/iteration", flush=True)
            if args.csv:
                new = not os.path.exists(args.csv)
                with open(args.csv, "a", newline="") as handle:
                    writer = csv.writer(handle)
                    if new:
                        writer.writerow(columns)
                    writer.writerow([mode, seed, args.iterations, args.episodes, acc, rate])
    print(f"\n{args.iterations} iterations, {args.episodes} test episodes x {base.ways} queries, seeds {args.seeds}")
    print(f"{'mode':16s} {'mean acc':>9s} {'min':>7s} {'max':>7s} {'paired diff vs serial (per seed)':>34s} {'CPU-s/it':>9s}")
    for mode in args.modes:
        accs = [found[mode, s][0] for s in args.seeds]
        diffs = [found[mode, s][0] - found["serial", s][0] for s in args.seeds] if "serial" in args.modes else []
        text = " ".join(f"{100 * d:+.2f}" for d in diffs)
        if diffs:
            text += f" (mean {100 * statistics.mean(diffs):+.2f})"
        rate = statistics.mean(found[mode, s][1] for s in args.seeds)
        print(f"{mode:16s} {100 * statistics.mean(accs):8.2f}% {100 * min(accs):6.2f}% {100 * max(accs):6.2f}% "
              f"{text:>34s} {rate:9.3f}")

if __name__ == "__main__":
    sys.exit(main())
