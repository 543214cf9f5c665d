"""Looped against batched evaluation (``eval_batch``), side by side, for Reptile's test procedure (issue 23).

configs/omniglot_minimal.yaml's Reptile (conv4_nichol, 64 filters, 28x28): trained for ``--iterations``
outer steps so that θ and the carried Adam state are not initial, then its first ``--episodes``
validation episodes (5-way 1-shot, 1 query per class) are scored with its own procedure, 50 Adam steps
(beta1 0) of batch 5 started from the carried state, once one episode at a time (``eval_batch: 0``) and
once per chunk size in ``--chunks``. Printed per row: wall and CPU seconds, the speed-ups over the looped
row (on a shared machine the CPU ratio is the one to read), and how far the per-episode scores are from the looped ones (largest loss difference, episodes
whose accuracy differs). One torch thread unless ``--threads``, as a run has.

    PYTHONPATH=. nice -n 10 python experiments/bench_eval.py --episodes 40 --chunks 10 40
    PYTHONPATH=. nice -n 10 python experiments/bench_eval.py --episodes 10 --chunks 10 --precision float64

Measured on the shared 2-core CPU (load ~11, commit e93f13d; 20 training iterations first): float32, 40
episodes, looped 8.9-9.5 CPU-s, batched 6.2 CPU-s at eval_batch 10, 20 or 40 (1.4-1.5x CPU; wall
1.4-2.4x, load-dependent); largest per-episode loss difference 2.0e-4 (50 Adam steps amplify float32
rounding), no accuracy differs. float64, 10 episodes: losses identical (0.0), 1.1x. fomaml's 3 SGD
steps, 40 episodes: 0.65 -> 0.46 CPU-s. The work is the 50 steps' convolutions, which batching does
not reduce on a CPU; what it removes is the per-step overhead of small kernels.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import torch

from metacompare.models import precision

from metacompare.training import scoring
from metacompare.training.build import build_run
from metacompare.config.loading import load_experiment


def timed(algorithm, episodes, cfg, device, dtype, chunk: int) -> tuple[float, float, list]:
    algorithm.cfg = dataclasses.replace(algorithm.cfg, eval_batch=chunk)
    rows: list = []
    wall, cpu = time.perf_counter(), time.process_time()
    scoring.evaluate(algorithm, episodes, cfg.eval_inner_steps, device, dtype, per_episode=rows)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/omniglot_minimal.yaml")
    parser.add_argument("--algorithm", default="reptile")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--chunks", type=int, nargs="+", default=[10, 40])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="float32", choices=["float32", "float64"],
                        help="float64: the loss differences are then the grouped kernels' summation order alone")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = next(c for c in load_experiment(args.config) if c.algorithm == args.algorithm)
    cfg = dataclasses.replace(base, iterations=args.iterations, eval_episodes=max(args.episodes, 1),
                              test_episodes=1, device=args.device,
                              precision=args.precision)
    run = build_run(cfg)
    algorithm, tasks = run.algorithm, run.tasks
    for iteration in range(cfg.iterations):
        batch = [precision.prepare_task(tasks.train.sample().to(run.device, run.dtype), cfg)
                 for _ in range(cfg.meta_batch_size)]
        algorithm.set_outer_lr(iteration / cfg.iterations)
        algorithm.meta_train_step(batch)
    episodes = tasks.validation[:args.episodes]
    state = algorithm.inner_state
    print(f"{args.algorithm}: {len(episodes)} episodes, {cfg.eval_inner_steps} {cfg.inner_optimizer} steps of batch "
          f"{cfg.eval_inner_batch_size or 'all'}, carried state at step {getattr(state, 'step', None)}, "
          f"{cfg.model} {cfg.filters} filters, {cfg.precision}, device {run.device}, {args.threads} thread(s)")
    wall0, cpu0, looped = timed(algorithm, episodes, cfg, run.device, run.dtype, 0)
    print(f"{'eval_batch':>10s} {'wall s':>8s} {'CPU s':>8s} {'wall x':>7s} {'CPU x':>7s} {'max |loss diff|':>16s} "
          f"{'acc differs':>12s} {'mean acc':>9s}")
    mean = sum(a for _, a in looped) / len(looped)
    print(f"{0:>10d} {wall0:8.2f} {cpu0:8.2f} {1.0:6.2f}x {1.0:6.2f}x {0.0:16.2e} {0:>12d} {100 * mean:8.2f}%",
          flush=True)
    for chunk in args.chunks:
        wall, cpu, rows = timed(algorithm, episodes, cfg, run.device, run.dtype, chunk)
        diff = max(abs(a[0] - b[0]) for a, b in zip(looped, rows))
        differs = sum(a[1] != b[1] for a, b in zip(looped, rows))
        mean = sum(a for _, a in rows) / len(rows)
        print(f"{chunk:>10d} {wall:8.2f} {cpu:8.2f} {wall0 / wall:6.2f}x {cpu0 / cpu:6.2f}x {diff:16.2e} {differs:>12d} "
              f"{100 * mean:8.2f}%", flush=True)


if __name__ == "__main__":
    sys.exit(main())
