"""Race every meta-learning implementation on the same model, parameters and tasks.

``python -m metacompare bench`` times one meta-iteration of: the naive Reptile loop from the user's tutorial article, the
canonical learn2learn and higher (FO)MAML loops, and metacompare's own algorithms (through
``build_algorithm(...).meta_train_step``) on each fast path. Each implementation first runs alone
in a worker process (:mod:`metacompare.workflows.bench_worker`) so that its peak memory is its own; that
worker also counts FLOPs and saves the first meta-gradient, which the parent compares with the
reference library's. Then one worker times them all, interleaved, so that load from other processes
on shared cores hits every contender alike. Tasks are random tensors in Omniglot's shapes: timing
does not depend on pixels.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from metacompare.workflows.bench_worker import (DEFAULT_THREADS, IMPLEMENTATIONS, MACHINE_IMPLEMENTATIONS, MACHINE_PROCS,
                                      ONE_THREAD, QUICK_IMPLEMENTATIONS, QUICK_MACHINE, TICK, WARM_UPS, Impl,
                                      Setting, _slug, synchronize)
from metacompare.models import precision
from metacompare.errors import UserError

__all__ = ["COLUMNS", "IMPLEMENTATIONS", "Impl", "Setting", "bench", "format_table", "race"]

COLUMNS = ["model", "inner_steps", "ways", "shots", "query", "meta_batch", "implementation", "algorithm",
           "library", "fast_path", "seconds_median", "seconds_min", "seconds_max", "repeats", "tasks_per_s",
           "speedup_vs_learn2learn", "speedup_vs_seed", "peak_memory_mb", "gflop", "useful_gflop", "gflop_per_s",
           "matmul_peak_gflop_per_s", "peak_fraction", "grad_reference", "grad_max_abs_diff",
           "grad_max_rel_diff", "threads", "processes", "device"]


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5, device: str = "cpu") -> float:
    """Best GFLOP/s of a square matmul: the ceiling that achieved GFLOP/s are read against."""
    a, b = (torch.rand(size, size, device=device).to(dtype) for _ in range(2))
    a @ b
    best = math.inf
    for _ in range(repeats):
        synchronize(device)
        tick = time.perf_counter()
        a @ b
        synchronize(device)
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
    base = [sys.executable, "-m", "metacompare.workflows.bench_worker", "--worker", "--setting", json.dumps(asdict(s)),
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
    """Gradients are compared with learn2learn's; Reptile, which learn2learn lacks, with the naive loop."""
    return "naive reptile loop" if impl.algorithm == "reptile" else f"learn2learn {impl.algorithm}"


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
                         "processes": impl.procs, "device": s.device})
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
        seed = by_name.get("naive reptile loop") if r["algorithm"] == "reptile" else None
        r["speedup_vs_learn2learn"] = l2l["seconds_median"] / r["seconds_median"] if l2l else math.nan
        r["speedup_vs_seed"] = seed["seconds_median"] / r["seconds_median"] if seed else math.nan
    return rows


def sampling_rate(config: str, data_root: str, ways: int, shots: int, query: int, count: int) -> dict:
    """Tasks per second drawn from the learn2learn TaskDataset of an Omniglot config's training split."""
    from metacompare.config.loading import load_experiment, with_overrides
    from metacompare.data import TaskSampler, omniglot_splits

    # the race's task shape, whatever the config's first algorithm trains on (Reptile's train_shots)
    cfg = with_overrides(load_experiment(config)[0], data_root=data_root, ways=ways, shots=shots, query=query,
                         train_shots=0)
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
          progress: bool = True, machine: bool = False, device: str = "cpu", filters: int | None = None) -> list[dict]:
    """Run the race over every (model, steps) pair and write ``bench.csv``, ``bench.png``, ``sampling.csv``;
    with ``machine``, the whole-machine race too (``bench_machine.csv``, ``bench_machine.png``).

    ``progress`` shows a bar (stderr) over every measured step of every race. ``device="cuda"`` races
    on the GPU (one process; the whole-machine race, a CPU question, is skipped). ``filters``: the conv4
    width and ResNet-12's first block's (default 8 with ``quick``, else 64, MetaOptNet's ResNet-12)."""
    from metacompare.storage import provenance, results

    _check_arguments(implementations, device, repeats)
    names = [n for n in implementations or (QUICK_IMPLEMENTATIONS if quick else ONE_THREAD)
             if IMPLEMENTATIONS[n].procs == 1]
    # The whole-machine race: its default contenders, or those named, when a data-parallel one is among them.
    whole = [n for n in implementations or (QUICK_MACHINE if quick else MACHINE_IMPLEMENTATIONS)
             if n in MACHINE_IMPLEMENTATIONS or n in QUICK_MACHINE]
    if not machine or device != "cpu" or not any(IMPLEMENTATIONS[n].procs > 1 for n in whole):
        whole = []
    out = Path(out_dir)
    results.check_writable(out, "--out", "--out")  # before the race, not after it
    size = 512 if quick else (8192 if device != "cpu" else 2048)
    if threads:
        torch.set_num_threads(threads)
    peaks, note = matmul_peaks(size, device)
    where = torch.cuda.get_device_name(device) if device != "cpu" else f"{torch.get_num_threads()} threads"
    print(f"matmul peak: float32 {peaks['float32']:.0f} GFLOP/s, bfloat16 {peaks['bfloat16']:.0f} GFLOP/s ({where}){note}")
    settings = [Setting(model=model, inner_steps=k, ways=ways, shots=shots, query=query, meta_batch=meta_batch,
                        filters=filters or (8 if quick else 64), device=device,
                        image_size=(16 if model == "resnet12" else 14) if quick else 28)
                for model in models for k in steps]
    rows, machine_rows, whole_peaks = [], [], machine_peaks(size) if whole else {}
    total = len(settings) * (race_steps(names, repeats) + race_steps(whole, repeats))
    with tqdm(total=total, desc="bench", unit="step", disable=not progress,
              file=sys.stderr, dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30.0) as bar:
        for s in settings:
            bar.set_postfix_str(f"{s.model}, {s.inner_steps} inner step{'s' * (s.inner_steps > 1)}")
            # The CUDA allocator's peak resets per contender: one process measures them all on a GPU.
            isolate = not quick and device == "cpu"
            rows += race(s, names, repeats, peaks, threads, isolate=isolate, bar=bar) if names else []
            if whole:
                bar.set_postfix_str(f"{s.model}, {s.inner_steps} inner step{'s' * (s.inner_steps > 1)}, whole machine")
                machine_rows += race(s, whole, repeats, whole_peaks, 0, isolate=not quick, bar=bar)
    _write_tables(out, rows, where if device != "cpu" else f"{threads or DEFAULT_THREADS} thread(s) per process",
                  machine_rows)
    _sampling(rows + machine_rows, out, sampling_config, data_root, ways, shots, query, quick)
    results.save_json(out / "provenance.json", provenance.record(out))  # which code made these numbers
    print(f"wrote {', '.join(str(out / f'{stem}.csv') for stem, t in [('bench', rows), ('bench_machine', machine_rows)] if t)}")
    return rows + machine_rows


def _check_arguments(implementations: list[str] | None, device: str, repeats: int) -> None:
    unknown = [n for n in implementations or () if n not in IMPLEMENTATIONS]
    if unknown:
        raise UserError(f"--implementations: unknown {unknown}; choose from {', '.join(IMPLEMENTATIONS)}")
    if device != "cpu" and not (device.startswith("cuda") and torch.cuda.is_available()):
        raise UserError(f"--device: {device!r} needs a visible CUDA GPU; use --device cpu")
    if repeats < 1:
        raise UserError(f"--repeats: must be at least 1, got {repeats}")


def _write_tables(out: Path, rows: list[dict], title: str, machine_rows: list[dict]) -> None:
    """``bench.csv`` and ``bench_machine.csv`` (where raced), each with its figure and console table."""
    from metacompare.storage import results

    machine_title = (f"whole machine: {MACHINE_PROCS} cores, peers at {DEFAULT_THREADS} threads, metacompare at "
                     f"{MACHINE_PROCS} processes x 1 thread")
    for stem, table, heading in [("bench", rows, title), ("bench_machine", machine_rows, machine_title)]:
        if table:
            results.write_csv(out / f"{stem}.csv", table, COLUMNS)
            plot(table, out / f"{stem}.png")
            print(f"\n{heading}\n{format_table(table)}")


def matmul_peaks(size: int, device: str = "cpu") -> tuple[dict[str, float], str]:
    """The float32 and bfloat16 matmul peaks, and a note for the console where bfloat16's is measured
    on smaller matrices: emulated (no native bfloat16, e.g. AVX2), a 2048 product takes about 20 s
    and the measurement, run per thread count, took some 12 minutes before any race."""
    small = size if precision.native_bfloat16(device) else min(size, EMULATED_SIZE)
    peaks = {"float32": matmul_peak(torch.float32, size, device=device),
             "bfloat16": matmul_peak(torch.bfloat16, small, device=device)}
    note = "" if small == size else (f"; bfloat16 measured on {small}x{small} matrices only: this CPU "
                                     f"({torch.backends.cpu.get_cpu_capability()}) has no native bfloat16")
    return peaks, note


EMULATED_SIZE = 512  # bfloat16 matmul peak's matrix size where it is emulated: about 2 s in all


def machine_peaks(size: int) -> dict[str, float]:
    """The matmul peaks at torch's default thread count (the whole machine's, for one process)."""
    before = torch.get_num_threads()
    torch.set_num_threads(DEFAULT_THREADS)
    try:
        return matmul_peaks(size)[0]
    finally:
        torch.set_num_threads(before)


def _sampling(rows: list[dict], out: Path, config: str, data_root: str | None, ways: int, shots: int, query: int,
              quick: bool) -> None:
    """Task sampling rate against the fastest training path's consumption (``sampling.csv``)."""
    from metacompare.storage import results

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
    from metacompare.config.loading import load_experiment

    return load_experiment(config)[0].data_root
