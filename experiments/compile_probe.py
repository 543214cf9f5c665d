"""Does ``compile: true`` pay? One meta-iteration of metacompare's eager step against its torch.compile'd
step, on the bench's setting (``metacompare.workflows.bench_worker.Setting``: same model, θ and random Omniglot-shaped
tasks), for Reptile, FOMAML and MAML on the looped and the task-batched engine.

For each contender: the compile (the first call, less one eager step) is reported apart; the first
meta-gradients, both from the same θ, are compared (max abs difference, and relative to the largest
entry); then both are timed interleaved, after warm-ups, so load from other processes hits them alike.
One torch thread on the CPU. "agrees" is float32 agreement at the level of the fast paths already
accepted at this size: against learn2learn the bench records, of the largest entry, 1.0-1.4e-4
(batched) and 1.6e-3 (channels_last) at 1 inner step, 2.4e-3 and 1.1e-2 for Reptile at 5
(``results/bench/bench.csv``, ``results/bench/steps5/``); the float64 check, ≤ 1e-10, is
``tests/test_compile.py``. Under ``--precision bfloat16`` both contenders autocast and the bound is
3% of the largest entry, below bf16's own distance from float32 (3-10% in the bench).

    OMP_NUM_THREADS=1 PYTHONPATH=. python experiments/compile_probe.py --models conv4_strided --steps 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from metacompare.engines import torch_compile as compiled
from metacompare.workflows.bench_worker import Setting, make_model, make_tasks
from metacompare.training.build import build_for
from metacompare.config.loading import RunConfig

# Of the largest gradient entry: the level of the fast paths accepted at this size (float32), and bf16's
# own rounding (the bench records 3-10% of the largest entry between bf16 and float32 learn2learn).
TOLERANCE = {"float32": 1e-2, "bfloat16": 3e-2}


def step_function(algorithm: str, s: Setting, device: str, batch_tasks: bool, compile: bool,
                  precision: str = "float32"):
    """One meta-iteration of metacompare's ``meta_train_step`` as the bench builds it, on ``device``;
    returns the step and the model (whose ``.grad`` holds the meta-gradient after a step)."""
    model = make_model(s).to(device)
    tasks = [t.to(device) for t in make_tasks(s)]
    cfg = RunConfig(algorithm=algorithm, dataset="omniglot", model=s.model, ways=s.ways, shots=s.shots,
                    query=s.query, inner_lr=s.inner_lr, inner_steps=s.inner_steps, inner_optimizer="sgd",
                    outer_optimizer="sgd", outer_lr=1e-4, meta_batch_size=s.meta_batch, filters=s.filters,
                    device=device, batch_tasks=batch_tasks, compile=compile, precision=precision)
    algo = build_for(model, cfg)

    def step():
        algo.meta_train_step(tasks)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return step, model


def timed(step) -> float:
    tick = time.perf_counter()
    step()
    return time.perf_counter() - tick


def probe(algorithm: str, s: Setting, device: str, batch_tasks: bool, warm_ups: int, repeats: int,
          precision: str = "float32") -> dict:
    eager, eager_model = step_function(algorithm, s, device, batch_tasks, False, precision)
    fast, fast_model = step_function(algorithm, s, device, batch_tasks, True, precision)
    first_eager = timed(eager)
    first_compiled = timed(fast)  # from the same θ: the gradients compared are these two
    expected = [p.grad.detach().clone() for p in eager_model.parameters()]
    got = [p.grad.detach().clone() for p in fast_model.parameters()]
    diff = max((a - b).abs().max().item() for a, b in zip(got, expected))
    scale = max(g.abs().max().item() for g in expected)
    for _ in range(warm_ups):
        eager(), fast()
    times = {"eager": [], "compiled": []}
    for _ in range(repeats):
        times["eager"].append(timed(eager))
        times["compiled"].append(timed(fast))
    e, c = statistics.median(times["eager"]), statistics.median(times["compiled"])
    return {"algorithm": algorithm, "model": s.model, "steps": s.inner_steps,
            "engine": "batched" if batch_tasks else "looped", "eager_s": e, "compiled_s": c, "speedup": e / c,
            "compile_s": first_compiled - first_eager, "grad_diff": diff, "grad_scale": scale,
            "agrees": diff <= TOLERANCE[precision] * scale}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--algorithms", nargs="+", default=["reptile", "fomaml", "maml"], help="algorithms to probe")
    parser.add_argument("--models", nargs="+", default=["conv4_strided", "conv4"], help="bench models")
    parser.add_argument("--steps", nargs="+", type=int, default=[1, 5], help="inner steps")
    parser.add_argument("--engines", nargs="+", default=["looped", "batched"], choices=["looped", "batched"],
                        help="the per-task loop, the task-batched engine (batch_tasks: true)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"],
                        help="both contenders' precision (bfloat16: autocast, compared with eager bfloat16)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    parser.add_argument("--cuda-mode", default=compiled.CUDA_MODE, help="torch.compile mode on CUDA",
                        choices=["reduce-overhead", "default", "max-autotune-no-cudagraphs"])
    parser.add_argument("--meta-batch", type=int, default=32, help="tasks per meta-batch")
    parser.add_argument("--warm-ups", type=int, default=2, help="untimed iterations of each after the first")
    parser.add_argument("--repeats", type=int, default=5, help="timed iterations of each, interleaved")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    compiled.CUDA_MODE = args.cuda_mode
    print(f"torch {torch.__version__}, device {args.device}"
          f"{' (' + torch.cuda.get_device_name() + ')' if args.device.startswith('cuda') else ''}, "
          f"{torch.get_num_threads()} thread(s), {args.precision}"
          + (f", mode {args.cuda_mode}" if args.device != "cpu" else ""))
    print(f"{'algorithm':<10}{'model':<15}{'steps':>5}  {'engine':<8}{'eager s':>9}{'compiled s':>11}"
          f"{'speedup':>8}{'compile s':>10}{'grad diff':>11}{'rel':>9}  agrees", flush=True)
    for model in args.models:
        for steps in args.steps:
            s = Setting(model=model, inner_steps=steps, meta_batch=args.meta_batch)
            for algorithm in args.algorithms:
                for engine in args.engines:
                    r = probe(algorithm, s, args.device, engine == "batched", args.warm_ups, args.repeats,
                              args.precision)
                    print(f"{r['algorithm']:<10}{r['model']:<15}{r['steps']:>5}  {r['engine']:<8}{r['eager_s']:>9.3f}"
                          f"{r['compiled_s']:>11.3f}{r['speedup']:>8.2f}{r['compile_s']:>10.0f}{r['grad_diff']:>11.1e}"
                          f"{r['grad_diff'] / r['grad_scale']:>9.1e}  {r['agrees']}", flush=True)


if __name__ == "__main__":
    main()
