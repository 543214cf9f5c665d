"""Race every meta-learning implementation on the same model, parameters and tasks.

``python -m metacompare bench`` times one meta-iteration of: the seed's naive Reptile loop, the
canonical learn2learn and higher (FO)MAML loops, and metacompare's own algorithms (through
``build_algorithm(...).meta_train_step``) on each fast path. Each implementation first runs alone
in a subprocess (``python -m metacompare.bench --worker``) so that its peak memory is its own; that
worker also counts FLOPs and saves the first meta-gradient, which the parent compares with the
reference library's. Then one worker times them all, interleaved, so that load from other processes
on shared cores hits every contender alike. Tasks are random tensors in Omniglot's shapes: timing
does not depend on pixels.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from metacompare.errors import UserError


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
    Impl("seed reptile loop", "reptile", "seed"),
    *[_ours("reptile", label, **fast) for label, fast in [
        ("", {}), ("[channels_last]", {"memory_format": "channels_last"}),
        ("[bf16]", {"precision": "bfloat16"}), ("[batched]", {"batch_tasks": True}),
        ("[batched+bf16]", {"batch_tasks": True, "precision": "bfloat16"})]],
    Impl("learn2learn fomaml", "fomaml", "learn2learn"),
    Impl("higher fomaml", "fomaml", "higher"),
    *[_ours("fomaml", label, **fast) for label, fast in [
        ("", {}), ("[bf16]", {"precision": "bfloat16"}), ("[batched]", {"batch_tasks": True}),
        ("[batched+bf16]", {"batch_tasks": True, "precision": "bfloat16"})]],
    Impl("learn2learn maml", "maml", "learn2learn"),
    Impl("higher maml", "maml", "higher"),
    *[_ours("maml", label, **fast) for label, fast in [
        ("", {}), ("[bf16]", {"precision": "bfloat16"}), ("[batched]", {"batch_tasks": True}),
        ("[batched+bf16]", {"batch_tasks": True, "precision": "bfloat16"})]],
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
MACHINE_IMPLEMENTATIONS = ("seed reptile loop", "learn2learn fomaml", "higher fomaml", "learn2learn maml",
                           "higher maml", *[i.name for i in MACHINE])
QUICK_MACHINE = ("learn2learn fomaml", f"metacompare fomaml [{MACHINE_PROCS} procs]")
QUICK_IMPLEMENTATIONS = ("seed reptile loop", "metacompare reptile", "metacompare reptile [batched+bf16]",
                         "learn2learn fomaml", "higher fomaml", "metacompare fomaml [batched]",
                         "learn2learn maml", "higher maml", "metacompare maml", "metacompare maml [bf16]")
COLUMNS = ["model", "inner_steps", "ways", "shots", "query", "meta_batch", "implementation", "algorithm",
           "library", "fast_path", "seconds_median", "seconds_min", "seconds_max", "repeats", "tasks_per_s",
           "speedup_vs_learn2learn", "speedup_vs_seed", "peak_memory_mb", "gflop", "useful_gflop", "gflop_per_s",
           "matmul_peak_gflop_per_s", "peak_fraction", "grad_reference", "grad_max_abs_diff",
           "grad_max_rel_diff", "threads", "processes"]


WARM_UPS = 2
TICK = "TICK"  # a worker's line after each measured step: the parent advances its progress bar


@dataclass(frozen=True)
class Setting:
    """The shapes of one race: every contender gets the same model, parameters and tasks."""

    model: str = "conv4"
    inner_steps: int = 1
    ways: int = 5
    shots: int = 1
    query: int = 15
    meta_batch: int = 32
    filters: int = 64
    image_size: int = 28
    inner_lr: float = 0.4
    seed: int = 0


# ------------------------------------------------------------------------------------ the worker
def make_model(s: Setting) -> torch.nn.Module:
    from metacompare.models import conv4

    torch.manual_seed(s.seed)
    return conv4(s.ways, filters=s.filters, image_size=s.image_size, strided=s.model == "conv4_strided")


def make_tasks(s: Setting) -> list:
    from metacompare.data import Task

    g = torch.Generator().manual_seed(s.seed + 1)
    def labels(k):
        return torch.arange(s.ways).repeat_interleave(k)
    def images(k):
        return torch.rand(s.ways * k, 1, s.image_size, s.image_size, generator=g)
    return [Task(images(s.shots), labels(s.shots), images(s.query), labels(s.query)) for _ in range(s.meta_batch)]


def step_function(impl: Impl, s: Setting, model: torch.nn.Module, tasks: list) -> Callable[[], None]:
    """A closure doing one meta-iteration, leaving the mean meta-gradient in ``p.grad``."""
    from metacompare import precision

    n, lr, steps = len(tasks), s.inner_lr, s.inner_steps
    outer = torch.optim.SGD(model.parameters(), lr=1e-4)
    first_order = impl.algorithm == "fomaml"
    if impl.library == "seed":
        from metacompare.algorithms.seed_reptile import naive_reptile_step

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
    from metacompare.build import build_for
    from metacompare.config import RunConfig

    cfg = RunConfig(algorithm=impl.algorithm, dataset="omniglot", model=s.model, ways=s.ways, shots=s.shots,
                    query=s.query, inner_lr=lr, inner_steps=steps, inner_optimizer="sgd", outer_optimizer="sgd",
                    outer_lr=1e-4, meta_batch_size=n, filters=s.filters, **dict(impl.fast))
    algorithm = build_for(model, cfg)  # the run's memory layout, as `metacompare run` builds it
    prepared = [precision.prepare_task(t, cfg) for t in tasks]
    return lambda: algorithm.meta_train_step(prepared)


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
    """Gradient of the first iteration, peak memory of two, and the FLOPs of a third."""
    from torch.utils.flop_counter import FlopCounterMode

    model, tasks = make_model(s), make_tasks(s)
    step = step_function(impl, s, model, tasks)
    _reset_peak()
    baseline = _peak_kib()
    step()  # the first iteration starts from the shared initial θ: its gradient is the one compared
    if grad_path:
        torch.save([p.grad.detach().float().clone() for p in model.parameters()], grad_path)
    step()
    peak_mb = (_peak_kib() - baseline) / 1024
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
            tick = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - tick)
            done()
    return times


def _tick() -> None:
    print(TICK, flush=True)


def worker_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="metacompare.bench --worker", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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
    if args.procs > 1 and "RANK" not in os.environ:
        return _spawn_ranks(args.procs, argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    s = Setting(**json.loads(args.setting))
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


def _rank_main(rank: int, procs: int, port: int, argv: list[str]) -> None:
    """One process of a data-parallel contender: join the gloo group, then be a worker; rank 0 reports
    (its times include the all-reduce, so they are the iteration's)."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(procs), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from metacompare import distributed

    distributed.start("cpu")
    if rank:
        sys.stdout = open(os.devnull, "w")
    worker_main(argv)
    distributed.stop()


def _spawn_ranks(procs: int, argv: list[str]) -> int:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:  # a free port on 127.0.0.1 for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.start_processes(_rank_main, args=(procs, port, argv), nprocs=procs, start_method="spawn")
    return 0


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


# ------------------------------------------------------------------------------------ the parent
def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of a square matmul: the ceiling that achieved GFLOP/s are read against."""
    a, b = torch.rand(size, size).to(dtype), torch.rand(size, size).to(dtype)
    a @ b
    best = math.inf
    for _ in range(repeats):
        tick = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - tick)
    return 2 * size**3 / best / 1e9


def race_steps(names: list[str], repeats: int) -> int:
    """Measured steps in one race: a memory pass per implementation, then warm-ups and repeats."""
    return len(names) * (1 + WARM_UPS + repeats)


def run_workers(names: list[str], s: Setting, repeats: int, grad_dir: str, threads: int,
                isolate: bool, bar: tqdm | None = None) -> dict[str, dict]:
    """Results per implementation.

    With ``isolate`` each implementation's memory is measured in its own process (exact peak) and
    then all are timed together in one process; otherwise one process does both (tests). ``bar``
    advances by one per measured step that the workers report.
    """
    base = [sys.executable, "-m", "metacompare.bench", "--worker", "--setting", json.dumps(asdict(s)),
            "--repeats", str(repeats), "--grad-dir", grad_dir]
    alone = [n for n in names if IMPLEMENTATIONS[n].procs == 1]
    one = base + ["--threads", str(threads)]
    calls = [(one + ["--impl", n, "--phase", "memory"], [n]) for n in alone] if isolate else []
    every = [arg for n in alone for arg in ("--impl", n)]
    if alone:
        calls.append((one + every + (["--phase", "time"] if isolate else ["--phase", "memory", "--phase", "time"]),
                      alone))
    # A data-parallel contender is timed in its own group of processes, one thread each.
    calls += [(base + ["--threads", "1", "--procs", str(IMPLEMENTATIONS[n].procs), "--impl", n,
                       "--phase", "memory", "--phase", "time"], [n]) for n in names if n not in alone]
    found: dict[str, dict] = {}
    for cmd, group in calls:
        with tempfile.TemporaryFile("w+") as errors:
            with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, text=True) as proc:
                for line in proc.stdout:
                    if line.startswith(TICK) and bar is not None:
                        bar.update(1)
                    elif line.startswith("RESULT "):
                        row = json.loads(line[len("RESULT "):])
                        found.setdefault(row.pop("implementation"), {}).update(row)
            if proc.returncode != 0:
                errors.seek(0)
                tail = errors.read().strip().splitlines()[-3:]
                tqdm.write(f"bench: worker for {', '.join(group)} failed: {' | '.join(tail)}", file=sys.stderr)
    return {name: r for name, r in found.items() if {"times", "flops"} <= set(r)}


def _grad_diff(grad_dir: str, name: str, reference: str) -> tuple[float, float]:
    ours, ref = Path(grad_dir, f"{_slug(name)}.pt"), Path(grad_dir, f"{_slug(reference)}.pt")
    if not ours.is_file() or not ref.is_file():
        return math.nan, math.nan
    a, b = torch.load(ours), torch.load(ref)
    absolute = max((x - y).abs().max().item() for x, y in zip(a, b))
    scale = max(y.abs().max().item() for y in b)
    return absolute, absolute / scale if scale else math.nan


def reference_of(impl: Impl) -> str:
    """Gradients are compared with learn2learn's; Reptile, which learn2learn lacks, with the seed loop."""
    return "seed reptile loop" if impl.algorithm == "reptile" else f"learn2learn {impl.algorithm}"


def race(s: Setting, names: list[str], repeats: int, peaks: dict[str, float], threads: int,
         isolate: bool, bar: tqdm | None = None) -> list[dict]:
    """Time every named implementation on setting ``s``; one row each."""
    with tempfile.TemporaryDirectory() as grad_dir:
        found = run_workers(names, s, repeats, grad_dir, threads, isolate, bar)
        rows = []
        for name in names:
            if name not in found:
                continue
            impl, r = IMPLEMENTATIONS[name], found[name]
            median = statistics.median(r["times"])
            bf16 = dict(impl.fast).get("precision") == "bfloat16"
            peak = peaks["bfloat16" if bf16 else "float32"]
            ref = reference_of(impl)
            absolute, relative = _grad_diff(grad_dir, name, ref) if name != ref else (0.0, 0.0)
            rows.append({"model": s.model, "inner_steps": s.inner_steps, "ways": s.ways, "shots": s.shots,
                         "query": s.query, "meta_batch": s.meta_batch, "implementation": name,
                         "algorithm": impl.algorithm, "library": impl.library, "fast_path": impl.fast_path,
                         "seconds_median": median, "seconds_min": min(r["times"]), "seconds_max": max(r["times"]),
                         "repeats": len(r["times"]), "tasks_per_s": s.meta_batch / median,
                         "peak_memory_mb": r["peak_memory_mb"], "gflop": r["flops"] / 1e9,
                         "matmul_peak_gflop_per_s": peak, "grad_reference": ref,
                         "grad_max_abs_diff": absolute, "grad_max_rel_diff": relative,
                         "threads": 1 if impl.procs > 1 else threads,
                         "processes": impl.procs})
    by_name = {r["implementation"]: r for r in rows}
    for r in rows:
        # Achieved GFLOP/s counts the reference's FLOPs (the work every contender must do), so a path
        # that does extra arithmetic (Reptile's metrics forward) is not credited for it. The raw
        # `gflop` of grouped (batch_tasks) rows is inflated: FlopCounterMode ignores `groups` in the
        # conv input-gradient formula, so it counts that term `meta_batch` times over.
        ref = by_name.get(r["grad_reference"], r)
        r["useful_gflop"] = ref["gflop"]
        r["gflop_per_s"] = ref["gflop"] / r["seconds_median"]
        r["peak_fraction"] = r["gflop_per_s"] / r["matmul_peak_gflop_per_s"]
        l2l = by_name.get(f"learn2learn {r['algorithm']}")
        seed = by_name.get("seed reptile loop") if r["algorithm"] == "reptile" else None
        r["speedup_vs_learn2learn"] = l2l["seconds_median"] / r["seconds_median"] if l2l else math.nan
        r["speedup_vs_seed"] = seed["seconds_median"] / r["seconds_median"] if seed else math.nan
    return rows


def sampling_rate(config: str, data_root: str, ways: int, shots: int, query: int, count: int) -> dict:
    """Tasks per second drawn from the learn2learn TaskDataset of an Omniglot config's training split."""
    from metacompare.config import load_experiment, with_overrides
    from metacompare.data import TaskSampler, omniglot_splits

    cfg = with_overrides(load_experiment(config)[0], data_root=data_root, ways=ways, shots=shots, query=query)
    train = omniglot_splits(cfg)["train"]
    sampler = TaskSampler(train, cfg, -1, seed=cfg.seed, split="train")
    sampler.sample()
    tick = time.perf_counter()
    for _ in range(count):
        sampler.sample()
    return {"config": config, "tasks": count, "tasks_per_s": count / (time.perf_counter() - tick)}


def format_table(rows: list[dict]) -> str:
    head = (f"{'model':<14}{'steps':>5}  {'implementation':<36}{'s/iter':>8}{'min':>7}{'max':>7}{'tasks/s':>9}"
            f"{'vs l2l':>8}{'vs seed':>8}{'MB':>7}{'GFLOP/s':>9}{'%peak':>7}{'grad diff':>11}")
    lines = [head, "-" * len(head)]
    for r in rows:
        def x(v, fmt):
            return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)
        lines.append(f"{r['model']:<14}{r['inner_steps']:>5}  {r['implementation']:<36}{r['seconds_median']:>8.3f}"
                     f"{r['seconds_min']:>7.2f}{r['seconds_max']:>7.2f}{r['tasks_per_s']:>9.1f}"
                     f"{x(r['speedup_vs_learn2learn'], '.2f'):>8}{x(r['speedup_vs_seed'], '.2f'):>8}"
                     f"{r['peak_memory_mb']:>7.0f}{r['gflop_per_s']:>9.1f}{100 * r['peak_fraction']:>6.1f}%"
                     f"{x(r['grad_max_abs_diff'], '.1e'):>11}")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path):
    """Tasks/s per implementation, one panel per (model, inner steps), in the report's shared style;
    returns the matplotlib Figure."""
    from metacompare.report.draw import style

    panels = sorted({(r["model"], r["inner_steps"]) for r in rows})
    with style.styled():
        fig = style.figure(6 * len(panels), 0.35 * len(rows) / max(len(panels), 1) + 2)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (model, steps) in zip(axes, panels):
            sub = [r for r in rows if (r["model"], r["inner_steps"]) == (model, steps)]
            ax.barh([r["implementation"] for r in sub], [r["tasks_per_s"] for r in sub],
                    color=[style.LIBRARY_COLORS[r["library"]] for r in sub])
            ax.invert_yaxis()
            ax.set_xlabel("tasks per second (higher is better)")
            ax.set_title(f"{model}, {steps} inner step{'s' * (steps > 1)}")
            ax.grid(True, axis="x")
        style.save(fig, path.parent, path.stem, dpi=100, svg=False)
    return fig


def bench(models: list[str], steps: list[int], ways: int = 5, shots: int = 1, query: int = 15,
          meta_batch: int = 32, repeats: int = 5, implementations: list[str] | None = None,
          out_dir: str = "results/bench", threads: int = 1, quick: bool = False,
          sampling_config: str = "configs/omniglot_minimal.yaml", data_root: str | None = None,
          progress: bool = True, machine: bool = False) -> list[dict]:
    """Run the race over every (model, steps) pair and write ``bench.csv``, ``bench.png``, ``sampling.csv``;
    with ``machine``, the whole-machine race too (``bench_machine.csv``, ``bench_machine.png``).

    ``progress`` shows a bar (stderr) over every measured step of every race."""
    from metacompare import results

    unknown = [n for n in implementations or () if n not in IMPLEMENTATIONS]
    if unknown:
        raise UserError(f"--implementations: unknown {unknown}; choose from {', '.join(IMPLEMENTATIONS)}")
    if repeats < 1:
        raise UserError(f"--repeats: must be at least 1, got {repeats}")
    names = [n for n in implementations or (QUICK_IMPLEMENTATIONS if quick else ONE_THREAD)
             if IMPLEMENTATIONS[n].procs == 1]
    # The whole-machine race: its default contenders, or those named, when a data-parallel one is among them.
    whole = [n for n in implementations or (QUICK_MACHINE if quick else MACHINE_IMPLEMENTATIONS)
             if n in MACHINE_IMPLEMENTATIONS or n in QUICK_MACHINE]
    if not machine or not any(IMPLEMENTATIONS[n].procs > 1 for n in whole):
        whole = []
    size = 512 if quick else 2048
    if threads:
        torch.set_num_threads(threads)
    peaks = {"float32": matmul_peak(torch.float32, size), "bfloat16": matmul_peak(torch.bfloat16, size)}
    print(f"matmul peak: float32 {peaks['float32']:.0f} GFLOP/s, bfloat16 {peaks['bfloat16']:.0f} GFLOP/s "
          f"({torch.get_num_threads()} threads)")
    settings = [Setting(model=model, inner_steps=k, ways=ways, shots=shots, query=query, meta_batch=meta_batch,
                        filters=8 if quick else 64, image_size=14 if quick else 28) for model in models for k in steps]
    rows, machine_rows = [], []
    total = len(settings) * (race_steps(names, repeats) + race_steps(whole, repeats))
    with tqdm(total=total, desc="bench", unit="step", disable=not progress,
              file=sys.stderr, dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30.0) as bar:
        for s in settings:
            bar.set_postfix_str(f"{s.model}, {s.inner_steps} inner step{'s' * (s.inner_steps > 1)}")
            rows += race(s, names, repeats, peaks, threads, isolate=not quick, bar=bar) if names else []
            if whole:
                bar.set_postfix_str(f"{s.model}, {s.inner_steps} inner step{'s' * (s.inner_steps > 1)}, whole machine")
                machine_rows += race(s, whole, repeats, machine_peaks(size), 0, isolate=not quick, bar=bar)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stem, table, title in [("bench", rows, f"{threads or DEFAULT_THREADS} thread(s) per process"),
                               ("bench_machine", machine_rows, f"whole machine: {MACHINE_PROCS} cores, peers at "
                                                               f"{DEFAULT_THREADS} threads, metacompare at "
                                                               f"{MACHINE_PROCS} processes x 1 thread")]:
        if table:
            results.write_csv(out / f"{stem}.csv", table, COLUMNS)
            plot(table, out / f"{stem}.png")
            print(f"\n{title}\n{format_table(table)}")
    _sampling(rows + machine_rows, out, sampling_config, data_root, ways, shots, query, quick)
    print(f"wrote {', '.join(str(out / f'{stem}.csv') for stem, t in [('bench', rows), ('bench_machine', machine_rows)] if t)}")
    return rows + machine_rows


def machine_peaks(size: int) -> dict[str, float]:
    """The matmul peaks at torch's default thread count (the whole machine's, for one process)."""
    before = torch.get_num_threads()
    torch.set_num_threads(DEFAULT_THREADS)
    try:
        return {"float32": matmul_peak(torch.float32, size), "bfloat16": matmul_peak(torch.bfloat16, size)}
    finally:
        torch.set_num_threads(before)


def _sampling(rows: list[dict], out: Path, config: str, data_root: str | None, ways: int, shots: int, query: int,
              quick: bool) -> None:
    """Task sampling rate against the fastest training path's consumption (``sampling.csv``)."""
    from metacompare import results

    try:
        if quick:
            raise UserError("skipped by --quick")
        rate = sampling_rate(config, data_root or _default_data_root(config), ways, shots, query, 200)
    except UserError as err:
        print(f"task sampling: not measured ({err})")
        return
    consumed = max((r["tasks_per_s"] for r in rows), default=math.nan)
    rate["fastest_training_tasks_per_s"] = consumed
    results.write_csv(out / "sampling.csv", [rate], list(rate))
    print(f"task sampling ({config}): {rate['tasks_per_s']:.0f} tasks/s sampled vs "
          f"{consumed:.0f} tasks/s consumed by the fastest training path")


def _default_data_root(config: str) -> str:
    """The config's data_root, resolved from the project root as ``metacompare run`` does."""
    from metacompare.config import load_experiment

    return load_experiment(config)[0].data_root


if __name__ == "__main__":  # the worker process of `python -m metacompare bench`, which is the command
    sys.exit(worker_main(sys.argv[1:]))
