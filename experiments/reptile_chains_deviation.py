"""How far Reptile with several carried Adam chains (``inner_chains``, what lets it run on processes)
lands from supervised-reptile's one serial chain, at equal iterations (issue 23).

Each seed trains configs/omniglot_minimal.yaml's Reptile protocol for ``--iterations`` outer steps
(meta-step 1 annealed to 0 over them), once per mode, from the same initial weights and on the same
sequence of training tasks (both come from the seed), so the modes differ only in how Adam's state is
carried; then each is scored with its own test procedure (50 Adam steps, batch 5) on the first
``--episodes`` of the fixed test episodes, the same for every mode. Printed: accuracy per mode and seed,
the difference from the serial chain per seed, paired tests over episodes and over seeds
(:func:`metacompare.report.stats.pairwise`), and CPU seconds per iteration (one thread, one process).
Each finished (mode, seed) is written to ``--out`` at once (with the commit that made it) and a rerun
skips what it holds.

    PYTHONPATH=. python experiments/reptile_chains_deviation.py --iterations 600 --episodes 200 \
        --modes serial chains2
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from metacompare.models import precision

from metacompare.storage import provenance

from metacompare.training import scoring
from metacompare.report.stats import pairwise
from metacompare.training.build import build_run
from metacompare.config.loading import load_experiment

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
    parser.add_argument("--out", help="folder for runs.csv, episodes.csv and paired.csv (default: "
                                      "results/reptile_chains_deviation_<iterations>it_<episodes>ep)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out or f"results/reptile_chains_deviation_{args.iterations}it_{args.episodes}ep")
    state = provenance.guard([out])  # a recorded result must come from committed code
    out.mkdir(parents=True, exist_ok=True)
    base = next(c for c in load_experiment(args.config) if c.algorithm == "reptile")
    base = dataclasses.replace(base, iterations=args.iterations, test_episodes=max(args.episodes, 1),
                               eval_episodes=1)
    runs_path, episodes_path = out / "runs.csv", out / "episodes.csv"
    runs = pd.read_csv(runs_path) if runs_path.exists() else pd.DataFrame()
    episodes = pd.read_csv(episodes_path) if episodes_path.exists() else pd.DataFrame()
    if len(runs) and {(int(i), int(e)) for i, e in zip(runs.iterations, runs.episodes)} != {(args.iterations, args.episodes)}:
        sys.exit(f"{runs_path}: holds runs of other --iterations/--episodes; give another --out")
    done = set(zip(runs["mode"], runs["seed"])) if len(runs) else set()
    for seed in args.seeds:
        for mode in args.modes:
            if (mode, seed) in done:  # rerunning resumes: each finished (mode, seed) is written at once
                continue
            cfg = dataclasses.replace(base, seed=seed, **MODES[mode])
            acc, rate, per_episode = train_and_score(cfg, args.episodes)
            print(f"seed {seed} {mode:16s} accuracy {100 * acc:6.2f}%  {rate:.3f} CPU-s/iteration", flush=True)
            runs = pd.concat([runs, pd.DataFrame([{
                "mode": mode, "seed": seed, "iterations": args.iterations, "episodes": args.episodes,
                "test_accuracy": acc, "cpu_s_per_iteration": rate, "git_commit": state.label()}])], ignore_index=True)
            episodes = pd.concat([episodes, pd.DataFrame({"algorithm": mode, "seed": seed,
                                                          "episode": range(len(per_episode)), "score": per_episode})],
                                 ignore_index=True)
            episodes.to_csv(episodes_path, index=False)
            runs.to_csv(runs_path, index=False)
    runs = runs[runs["mode"].isin(args.modes) & runs["seed"].isin(args.seeds)]
    episodes = episodes[episodes["algorithm"].isin(args.modes) & episodes["seed"].isin(args.seeds)]
    paired = pd.concat([pairwise(episodes, "episode"), pairwise(episodes, "seed")], ignore_index=True)
    paired.to_csv(out / "paired.csv", index=False)
    print(f"\n{args.iterations} iterations, {args.episodes} test episodes x {base.ways} queries, seeds {args.seeds}")
    print(f"{'mode':16s} {'mean acc':>9s} {'min':>7s} {'max':>7s} {'difference vs serial per seed':>34s} {'CPU-s/it':>9s}")
    for mode, group in runs.groupby("mode", sort=False):
        serial = runs[runs["mode"] == "serial"].set_index("seed")["test_accuracy"]
        diffs = (group.set_index("seed")["test_accuracy"] - serial).dropna()
        text = " ".join(f"{100 * d:+.2f}" for d in diffs) + (f" (mean {100 * diffs.mean():+.2f})" if len(diffs) else "")
        print(f"{mode:16s} {100 * group.test_accuracy.mean():8.2f}% {100 * group.test_accuracy.min():6.2f}% "
              f"{100 * group.test_accuracy.max():6.2f}% {text:>34s} {group.cpu_s_per_iteration.mean():9.3f}")
    print("\npaired over episodes (all seeds) and over seeds:")
    print(paired[["a", "b", "over", "n", "difference", "difference_ci95", "t_p_holm", "verdict"]].to_string(index=False))
    print(f"written: {out}/runs.csv, episodes.csv, paired.csv")


if __name__ == "__main__":
    sys.exit(main())
