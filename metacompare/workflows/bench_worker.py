"""One bench contender's process: build a contender, measure its memory, FLOPs, gradient and time.

``metacompare bench`` (:mod:`metacompare.workflows.bench`) starts ``python -m metacompare.workflows.bench_worker`` once per
contender for its memory (so that the peak is its own) and once for all of them, timed interleaved.
A worker prints ``RESULT <json>`` lines and a ``TICK`` line per measured step. On a GPU the worker
synchronises the device around each timed step and reads the CUDA allocator's peak instead of RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Impl:
    """One contender: which algorithm, whose code, and (for metacompare) which fast-path settings."""

    name: str
    algorithm: str
    library: str
    fast: tuple[tuple[str, object], ...] = ()
    procs: int = 1  # > 1: metacompare's data-parallel engine over that many processes, one thread each

    @property
    def fast_path(self) -> str:
        return "+".join(f"{k}={v}" for k, v in self.fast) or "default"


def _ours(algorithm: str, label: str, **fast) -> Impl:
    return Impl(f"metacompare {algorithm}{' ' + label if label else ''}", algorithm, "metacompare",
                tuple(sorted(fast.items())))


IMPLEMENTATIONS: dict[str, Impl] = {i.name: i for i in [
    Impl("naive reptile loop", "reptile", "naive"),
    *[_ours("reptile", label, **fast) for label, fast in [
        ("", {}), ("[channels_last]", {"memory_format": "channels_last"}),
        ("[bf16]", {"precision": "bfloat16"}), ("[batched]", {"batch_tasks": True}),
        ("[batched+bf16]", {"batch_tasks": True, "precision": "bfloat16"}), ("[vmap]", {"vmap": True})]],
    Impl("learn2learn fomaml", "fomaml", "learn2learn"),
    Impl("higher fomaml", "fomaml", "higher"),
    *[_ours("fomaml", label, **fast) for label, fast in [
        ("", {}), ("[bf16]", {"precision": "bfloat16"}), ("[batched]", {"batch_tasks": True}),
        ("[batched+bf16]", {"batch_tasks": True, "precision": "bfloat16"}), ("[vmap]", {"vmap": True})]],
    Impl("learn2learn maml", "maml", "learn2learn"),
    Impl("higher maml", "maml", "higher"),
    *[_ours("maml", label, **fast) for label, fast in [
        ("", {}), ("[bf16]", {"precision": "bfloat16"}), ("[batched]", {"batch_tasks": True}),
        ("[batched+bf16]", {"batch_tasks": True, "precision": "bfloat16"}), ("[vmap]", {"vmap": True})]],
]}
MACHINE_PROCS = os.cpu_count() or 1  # the whole-machine race: one process per core
DEFAULT_THREADS = torch.get_num_threads()  # torch's own choice, before anything here changes it


def _whole_machine(algorithm: str, label: str, **fast) -> Impl:
    tag = f"{MACHINE_PROCS} procs" + (f"+{label}" if label else "")
    return Impl(f"metacompare {algorithm} [{tag}]", algorithm, "metacompare", tuple(sorted(fast.items())),
                MACHINE_PROCS)


MACHINE = [_whole_machine(algorithm, label, **fast) for algorithm in ("reptile", "fomaml", "maml")
           for label, fast in [("", {}), ("bf16", {"precision": "bfloat16"})]]
ONE_THREAD = tuple(IMPLEMENTATIONS)
IMPLEMENTATIONS.update({i.name: i for i in MACHINE})
# The whole-machine race: the peers as their users run them (one process, torch's default threads)
# against metacompare's data-parallel engine (one process per core).
MACHINE_IMPLEMENTATIONS = ("naive reptile loop", "learn2learn fomaml", "higher fomaml", "learn2learn maml",
                           "higher maml", *[i.name for i in MACHINE])
QUICK_MACHINE = ("learn2learn fomaml", f"metacompare fomaml [{MACHINE_PROCS} procs]")
QUICK_IMPLEMENTATIONS = ("naive reptile loop", "metacompare reptile", "metacompare reptile [batched+bf16]",
                         "learn2learn fomaml", "higher fomaml", "metacompare fomaml [batched]",
                         "metacompare fomaml [vmap]",
                         "learn2learn maml", "higher maml", "metacompare maml", "metacompare maml [bf16]")

WARM_UPS = 2
TICK = "TICK"  # a worker's line after each measured step: the parent advances its progress bar


@dataclass(frozen=True)
class Setting:
    """The shapes of one race: every contender gets the same model, parameters and tasks."""

    model: str = "conv4"  # conv4, conv4_strided or resnet12 (widths from filters: resnet12_widths)
    inner_steps: int = 1
    ways: int = 5
    shots: int = 1
    query: int = 15
    meta_batch: int = 32
    filters: int = 64
    image_size: int = 28
    inner_lr: float = 0.4
    seed: int = 0
    device: str = "cpu"  # "cuda": every contender's model and tasks on the GPU


# ------------------------------------------------------------------------------------ the worker
def resnet12_widths(filters: int) -> tuple[int, ...]:
    """ResNet-12's widths in MetaOptNet's proportions, 1 : 2.5 : 5 : 10, from the first block's
    (``filters``): 64 gives 64-160-320-640, the quick race's 8 gives 8-20-40-80."""
    return tuple(round(filters * r) for r in (1, 2.5, 5, 10))


def make_model(s: Setting) -> torch.nn.Module:
    from metacompare.models import conv4, resnet12

    torch.manual_seed(s.seed)
    if s.model == "resnet12":
        return resnet12(s.ways, 1, resnet12_widths(s.filters)).to(s.device)
    return conv4(s.ways, filters=s.filters, image_size=s.image_size,
                 strided=s.model == "conv4_strided").to(s.device)


def make_tasks(s: Setting) -> list:
    from metacompare.data import Task

    g = torch.Generator().manual_seed(s.seed + 1)
    def labels(k):
        return torch.arange(s.ways).repeat_interleave(k)
    def images(k):
        return torch.rand(s.ways * k, 1, s.image_size, s.image_size, generator=g)
    return [Task(images(s.shots), labels(s.shots), images(s.query), labels(s.query)).to(s.device)
            for _ in range(s.meta_batch)]


def step_function(impl: Impl, s: Setting, model: torch.nn.Module, tasks: list) -> Callable[[], None]:
    """A closure doing one meta-iteration, leaving the mean meta-gradient in ``p.grad``."""
    from metacompare.models import precision

    n, lr, steps = len(tasks), s.inner_lr, s.inner_steps
    outer = torch.optim.SGD(model.parameters(), lr=1e-4)
    first_order = impl.algorithm == "fomaml"
    if impl.library == "naive":
        from metacompare.algorithms.naive_reptile import naive_reptile_step

        pairs = [(t.all_x, t.all_y) for t in tasks]
        return lambda: naive_reptile_step(model, pairs, outer, lr, steps, F.cross_entropy, fixed_sign=True)
    if impl.library == "learn2learn":
        from metacompare._l2l import l2l

        maml = l2l.algorithms.MAML(model, lr=lr, first_order=first_order)

        def l2l_step():
            outer.zero_grad()
            for t in tasks:
                learner = maml.clone()
                for _ in range(steps):
                    learner.adapt(F.cross_entropy(learner(t.support_x), t.support_y))
                (F.cross_entropy(learner(t.query_x), t.query_y) / n).backward()
            outer.step()
        return l2l_step
    if impl.library == "higher":
        import higher

        inner = torch.optim.SGD(model.parameters(), lr=lr)

        def higher_step():
            outer.zero_grad()
            for t in tasks:
                with higher.innerloop_ctx(model, inner, copy_initial_weights=False,
                                          track_higher_grads=not first_order) as (fmodel, diffopt):
                    for _ in range(steps):
                        diffopt.step(F.cross_entropy(fmodel(t.support_x), t.support_y))
                    loss = F.cross_entropy(fmodel(t.query_x), t.query_y) / n
                    if first_order:  # higher's documented FOMAML: gradient at the fast weights
                        for p, g in zip(model.parameters(), torch.autograd.grad(loss, fmodel.parameters())):
                            p.grad = g if p.grad is None else p.grad + g
                    else:
                        loss.backward()
            outer.step()
        return higher_step
    from metacompare.training.build import build_for
    from metacompare.config.loading import RunConfig
    from metacompare.config.runconfig import ResNet12Config

    widths = ResNet12Config(widths=resnet12_widths(s.filters)) if s.model == "resnet12" else ResNet12Config()
    cfg = RunConfig(algorithm=impl.algorithm, dataset="omniglot", model=s.model, ways=s.ways, shots=s.shots,
                    query=s.query, inner_lr=lr, inner_steps=steps, inner_optimizer="sgd", outer_optimizer="sgd",
                    outer_lr=1e-4, meta_batch_size=n, filters=s.filters, device=s.device, resnet12=widths,
                    **dict(impl.fast))
    algorithm = build_for(model, cfg)  # the run's memory layout, as `metacompare run` builds it
    prepared = [precision.prepare_task(t, cfg) for t in tasks]
    return lambda: algorithm.meta_train_step(prepared)


def synchronize(device: str) -> None:
    """Wait for the GPU's queued kernels, so that a timer around a step measures the step."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _peak_kib() -> int:
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _reset_peak() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure_memory(impl: Impl, s: Setting, grad_path: str | None) -> dict:
    """Gradient of the first iteration, peak memory of two, and the FLOPs of a third.

    The peak is the process's resident memory on the CPU and the CUDA allocator's on a GPU, above
    what the model and tasks already held."""
    from torch.utils.flop_counter import FlopCounterMode

    model, tasks = make_model(s), make_tasks(s)
    step = step_function(impl, s, model, tasks)
    cuda = s.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats(s.device)
        baseline = torch.cuda.memory_allocated(s.device) / 1024
    else:
        _reset_peak()
        baseline = _peak_kib()
    step()  # the first iteration starts from the shared initial θ: its gradient is the one compared
    if grad_path:
        torch.save([p.grad.detach().float().cpu().clone() for p in model.parameters()], grad_path)
    step()
    synchronize(s.device)
    peak_kib = torch.cuda.max_memory_allocated(s.device) / 1024 if cuda else _peak_kib()
    peak_mb = (peak_kib - baseline) / 1024
    with FlopCounterMode(display=False) as counter:
        step()
    return {"peak_memory_mb": peak_mb, "flops": counter.get_total_flops()}


def measure_times(impls: list[Impl], s: Setting, repeats: int,
                  done: Callable[[], None] = lambda: None) -> dict[str, list[float]]:
    """Seconds per iteration, the implementations interleaved round-robin after two warm-ups each.

    Interleaving makes every contender see the same load, so ratios hold on cores shared with others.
    ``done`` is called after every step (warm-ups included), for the parent's progress bar.
    """
    steps = {impl.name: step_function(impl, s, make_model(s), make_tasks(s)) for impl in impls}
    for step in steps.values():
        for _ in range(WARM_UPS):
            step()
            done()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            synchronize(s.device)
            tick = time.perf_counter()
            step()
            synchronize(s.device)
            times[name].append(time.perf_counter() - tick)
            done()
    return times


def _tick() -> None:
    print(TICK, flush=True)


def worker_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="metacompare.workflows.bench --worker", allow_abbrev=False,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description="one bench worker (started by `metacompare bench`); prints "
                                                 "RESULT <json> lines and a TICK line per measured step")
    parser.add_argument("--worker", action="store_true", help="run as a worker (required)")
    parser.add_argument("--impl", action="append", required=True, help="implementation name (repeatable)")
    parser.add_argument("--setting", required=True, help="JSON of a Setting")
    parser.add_argument("--phase", action="append", choices=["memory", "time"], required=True,
                        help="memory: peak memory, FLOPs and gradient of each; time: interleaved timing")
    parser.add_argument("--repeats", type=int, default=5, help="timed iterations after the warm-ups")
    parser.add_argument("--grad-dir", default=None, help="folder to save each first meta-gradient in")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--procs", type=int, default=1, help="processes of one data-parallel contender")
    args = parser.parse_args(argv)
    s = Setting(**json.loads(args.setting))
    if args.procs > 1 and "RANK" not in os.environ:
        return _spawn_ranks(args.procs, s.device, argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if "memory" in args.phase:
        for name in args.impl:
            grad = os.path.join(args.grad_dir, f"{_slug(name)}.pt") if args.grad_dir and _is_rank0() else None
            out = measure_memory(IMPLEMENTATIONS[name], s, grad)
            print("RESULT " + json.dumps({"implementation": name, **out}), flush=True)
            _tick()
    if "time" in args.phase:
        for name, times in measure_times([IMPLEMENTATIONS[n] for n in args.impl], s, args.repeats, _tick).items():
            print("RESULT " + json.dumps({"implementation": name, "times": times}), flush=True)
    return 0


def _is_rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _rank_main(rank: int, procs: int, port: int, device: str, argv: list[str]) -> None:
    """One process of a data-parallel contender: join the group, then be a worker; rank 0 reports
    (its times include the all-reduce, so they are the iteration's)."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(procs), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from metacompare.engines import distributed

    distributed.start(device)
    if rank:
        sys.stdout = open(os.devnull, "w")
    worker_main(argv)
    distributed.stop()


def _spawn_ranks(procs: int, device: str, argv: list[str]) -> int:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:  # a free port on 127.0.0.1 for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.start_processes(_rank_main, args=(procs, port, device, argv), nprocs=procs, start_method="spawn")
    return 0


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


if __name__ == "__main__":  # started by `python -m metacompare bench`, which is the command
    sys.exit(worker_main(sys.argv[1:]))
