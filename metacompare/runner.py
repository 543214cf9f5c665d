"""Train and evaluate one configuration, with checkpoints so that nothing is lost on a crash.

``train_and_evaluate(cfg)`` is the whole job: build tasks, model and algorithm; meta-train with a
progress bar and periodic validation; score the fixed test episodes; write the run's files and its
row in the experiment's ``runs.csv``. Re-running a finished configuration returns its summary (once
:func:`metacompare.provenance.check_answer` finds the same settings and data); re-running
an interrupted one resumes from its last checkpoint and ends with the same numbers as an
uninterrupted run (CPU, same seed).
"""

from __future__ import annotations

import copy
import io
import math
import random
import resource
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from metacompare import files, provenance, results, tracking
from metacompare import budget, distributed, precision, scoring, timing
from metacompare.ladder import Ladder
from metacompare.build import build_run
from metacompare.scoring import evaluate
from metacompare.config import RunConfig, dump, identity_of
from metacompare.data import Task
from metacompare.data.splits import write_record
from metacompare.errors import UserError



def run_dir(cfg: RunConfig) -> Path:
    return Path(cfg.results_dir) / cfg.experiment / cfg.run_id()


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


@contextmanager
def stop_signals_raise() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so that it, like Ctrl-C, ends in a saved checkpoint."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler) if _main_thread() else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class StopRequest:
    """Set by SIGINT/SIGTERM during training; the loop checkpoints at the end of the iteration and stops."""

    def __init__(self) -> None:
        self.signal: int | None = None


@contextmanager
def deferred_stop() -> Iterator[StopRequest]:
    """The first SIGINT or SIGTERM only asks the training loop to stop, so the checkpoint it then
    writes holds a whole iteration (model, optimiser, sampler state and metrics agree); a second one
    stops at once, keeping the last checkpoint. SIGINT is left alone where it is ignored (sweep workers)."""
    request = StopRequest()

    def handler(signum, frame):
        if request.signal is not None:
            raise KeyboardInterrupt(f"signal {signum}")
        request.signal = signum

    previous = {}
    if _main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            if sig == signal.SIGINT and signal.getsignal(sig) is not signal.default_int_handler:
                continue
            previous[sig] = signal.signal(sig, handler)
    try:
        yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


RUN_THREADS = 1  # torch threads per run, whatever --workers is: see pin_threads
CHECKPOINT_FIX = "delete it to start this run afresh"


def pin_threads() -> None:
    """One torch thread per run, so that a run's numbers do not depend on how many cores or sweep
    workers there are (a parallel reduction sums in a thread-count-dependent order). Parallelism
    comes from running several runs at once (``sweep --workers``)."""
    if torch.get_num_threads() != RUN_THREADS:
        torch.set_num_threads(RUN_THREADS)


def _rng_states(sampler_rng: random.Random) -> dict[str, Any]:
    """Every RNG state as tensors, numbers and tuples, which ``torch.load(weights_only=True)`` reads."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"sampler_rng": sampler_rng.getstate(), "torch_rng": torch.get_rng_state(),
            "numpy_rng": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
            "python_rng": random.getstate()}


def _restore_rng_states(state: dict[str, Any], sampler_rng: random.Random) -> None:
    name, keys, pos, has_gauss, gauss = state["numpy_rng"]
    sampler_rng.setstate(state["sampler_rng"])
    torch.set_rng_state(state["torch_rng"])
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python_rng"])


def _save_checkpoint(path: Path, algorithm, iteration: int, rows: list[dict], elapsed: float, cfg: RunConfig,
                     sampler_rng: random.Random, status: str = "running", diverged_at: int | None = None,
                     extra: dict | None = None, train_time: float = 0.0, peak_mb: float = 0.0) -> None:
    buffer = io.BytesIO()
    torch.save({"config": cfg.to_dict(), "iteration": iteration, "algorithm": algorithm.state_dict(),
                "metrics": rows, "elapsed": elapsed, "train_time": train_time, "peak_memory_mb": peak_mb,
                **_rng_states(sampler_rng), "status": status, "diverged_at": diverged_at,
                "extra": extra or {}}, buffer)
    results.atomic_write(path, buffer.getvalue())


CHECKPOINT_KEYS = ("config", "iteration", "algorithm", "metrics", "elapsed", "sampler_rng", "torch_rng",
                   "numpy_rng", "python_rng", "status", "diverged_at")


def _load_checkpoint(path: Path, cfg: RunConfig) -> dict[str, Any] | None:
    if not path.is_file() and not path.is_dir():
        return None
    state = files.load_torch(path, CHECKPOINT_FIX, required=CHECKPOINT_KEYS)
    theirs, ours = state["config"], cfg.identity()
    theirs = identity_of(theirs) if isinstance(theirs, dict) else {}
    if theirs != ours:
        changed = sorted(k for k in set(ours) | set(theirs) if theirs.get(k) != ours.get(k))
        raise UserError(f"{path}: the checkpoint was made with a different config (fields differ: "
                        f"{', '.join(changed)}); delete the run folder {path.parent} or restore the "
                        f"original config to resume")
    return state


def _start_clean(out: Path, cfg: RunConfig, force: bool) -> None:
    """Before any training: the results table must be readable (else the run could not be recorded
    at its end), leftovers of dead writers go, and ``force`` unmakes the finished run first, so that
    a forced rerun stopped part-way is resumed, not mistaken for the old finished one."""
    results.check_writable(out)
    results.read_runs(out.parent)
    for name in ("checkpoint.pt", "metrics.csv", "config.yaml", "model.pt", "summary.json", "error.txt"):
        results.remove_stale_temporaries(out / name)
    if force:
        for name in ("summary.json", "model.pt", "checkpoint.pt"):
            (out / name).unlink(missing_ok=True)
        results.forget_run(out.parent, cfg.run_id())


def train_and_evaluate(cfg: RunConfig, progress: bool = True, force: bool = False,
                       on_validation: Callable[[int, dict], None] | None = None) -> dict[str, Any]:
    """Run ``cfg`` to the end (or resume it) and return its summary; see the module docstring.
    ``on_validation(evaluation_index, scores)`` follows each validation (a tuner's pruner may raise there)."""
    out = run_dir(cfg)
    summary_path, checkpoint_path = out / "summary.json", out / "checkpoint.pt"
    distributed.start(cfg.device)  # under torchrun: join the group (one process: nothing)
    writer = distributed.is_writer()  # only rank 0 writes files
    if distributed.from_writer(summary_path.exists() and not force):
        return finished_run(out, cfg=cfg) if writer else results.read_summary(summary_path)
    pin_threads()
    distributed.check(cfg)

    run = build_run(cfg)  # data errors surface here, before anything is written
    device, dtype, tasks, model, algorithm = run.device, run.dtype, run.tasks, run.model, run.algorithm
    if writer:
        with results.removed_if_refused(out):
            _start_clean(out, cfg, force)
            if tasks.record is not None:  # a user dataset: its split into the run, its digest checked (data.splits)
                write_record(tasks.record, out)

    start_iteration, rows, elapsed, train_time, peak_mb = 0, [], 0.0, 0.0, 0.0
    status, diverged_at = "running", None
    extra: dict[str, Any] = {}  # the floor's scores and the best-validation state survive a resume
    state = distributed.from_writer(_load_checkpoint(checkpoint_path, cfg) if writer else None)
    if state is not None:
        algorithm.load_state_dict(state["algorithm"])
        start_iteration, rows, elapsed = state["iteration"], state["metrics"], state["elapsed"]
        train_time, peak_mb = state.get("train_time", 0.0), state.get("peak_memory_mb", 0.0)
        status, diverged_at = state["status"], state["diverged_at"]
        extra = state.get("extra", {})
        _restore_rng_states(state, tasks.train.rng)
    tracker = tracking.open_tracker(cfg, out, start_iteration) if writer else tracking.Tracker()
    if writer:
        results.atomic_write(out / "config.yaml", dump(cfg))

    def checkpoint(iteration: int) -> None:
        if not writer:
            return
        _save_checkpoint(checkpoint_path, algorithm, iteration, rows, elapsed + time.perf_counter() - began,
                         cfg, tasks.train.rng, status, diverged_at, extra, train_time,
                         max(peak_mb, peak_memory_mb(device)))

    began = time.perf_counter()  # the run's wall clock: the floor, training, scoring (timing.split)
    clock = timing.PhaseClock(extra)
    if "floor" not in extra:  # the untrained network under the same test procedures: the floor
        extra["floor_episodes"] = {}
        with clock.phase("floor"):  # on the first floor_episodes test episodes (scoring.floor_count)
            extra["floor"] = scoring.score_test(algorithm, tasks.test[:scoring.floor_count(cfg)], cfg, device,
                                                dtype, "floor_", extra["floor_episodes"])

    meter = budget.BudgetMeter(cfg, algorithm.task_work() * cfg.meta_batch_size, extra)
    ladder = Ladder(cfg, meter.per_iteration, extra, out)  # snapshots at smaller budgets (budget_rungs)
    ladder.cross(start_iteration, algorithm, extra)  # a rung too small for one iteration: the initial weights
    iteration = start_iteration
    timed = cfg.budget.seconds is not None or cfg.budget.cpu_seconds is not None  # no iteration count to show
    bar = tqdm(total=None if timed else meter.planned, initial=start_iteration,
               desc=f"{cfg.algorithm}", unit="it",
               disable=not progress or not writer, dynamic_ncols=True, file=sys.stderr,
               mininterval=0.5 if sys.stderr.isatty() else 30.0)
    try:
        with deferred_stop() as stop:
            while iteration < cfg.iterations and status == "running" and not meter.spent(iteration):
                started, started_cpu = time.perf_counter(), time.process_time()
                batch = [precision.prepare_task(tasks.train.sample().to(device, dtype), cfg)
                         for _ in range(cfg.meta_batch_size)]
                tick = time.perf_counter()
                algorithm.set_outer_lr(meter.fraction(iteration))
                metrics = algorithm.meta_train_step(batch)
                logging_wall, logging_cpu = algorithm.take_logging_seconds()  # measurement: not charged
                train_time += time.perf_counter() - tick - logging_wall
                meter.trained(*distributed.iteration_times(time.perf_counter() - started - logging_wall,
                                                           time.process_time() - started_cpu - logging_cpu))
                meter.logged(logging_wall)
                iteration += 1
                if not all(math.isfinite(v) for v in metrics.values()) or not _finite(model):
                    status, diverged_at = "diverged", iteration
                    bar.write(f"{cfg.algorithm}: training loss became non-finite at iteration {iteration}; "
                              f"run recorded as diverged")
                    break
                bar.update(1)
                bar.set_postfix({k: f"{v:.3f}" for k, v in metrics.items()}, refresh=False)  # drawn at mininterval
                tracker.train(iteration, metrics)
                if meter.due(iteration) or iteration == cfg.iterations:
                    tick = time.perf_counter()
                    val = evaluate(algorithm, tasks.validation, cfg.eval_inner_steps, device, dtype)
                    meter.validated(time.perf_counter() - tick)
                    rows.append({"iteration": iteration, "wall_time_s": elapsed + time.perf_counter() - began,
                                 **meter.row(),
                                 "train_loss": metrics["loss"], "train_accuracy": metrics.get("accuracy", math.nan),
                                 **{f"val_{k}": v for k, v in val.items()}})
                    if writer:
                        results.write_csv(out / "metrics.csv", rows, _metric_columns(rows))
                    _keep_if_best(extra, algorithm, cfg, iteration, val)
                    tracker.validation(iteration, rows[-1], peak_memory_mb(device))
                    if on_validation is not None:
                        on_validation(len(rows), val)
                # after this iteration's validation: under test_checkpoint: best a run of its own that
                # stopped here would test the best state including it
                ladder.cross(iteration, algorithm, extra)
                stopping = distributed.any_rank(stop.signal is not None)  # every rank stops at one iteration
                if iteration % cfg.checkpoint_interval == 0 or stopping:
                    checkpoint(iteration)
                if stopping:
                    raise KeyboardInterrupt(f"signal {stop.signal or 'on another process'}")
            if status == "running" and iteration > start_iteration and iteration % cfg.checkpoint_interval:
                checkpoint(iteration)  # training is done: a kill during testing need not redo it
        with stop_signals_raise():  # the checkpoint above is whole, so the test may stop at any point
            episode_columns: dict[str, list] = {}
            if status == "running" and cfg.test_checkpoint == "best" and "best_state" in extra:
                algorithm.load_state_dict(extra["best_state"])
            with clock.phase("test"):
                test = scoring.score_test(algorithm, tasks.test, cfg, device, dtype, "test_", episode_columns) \
                    if status == "running" else {}
                by_steps = {steps: evaluate(algorithm, tasks.test, steps, device, dtype)
                            for steps in cfg.test_inner_steps} if status == "running" else {}
            # generalisation (outline 9.4): the same score on fresh tasks of the training classes
            with clock.phase("train_tasks"):
                seen = scoring.evaluate(algorithm, tasks.train_episodes[:scoring.floor_count(cfg)],
                                        cfg.eval_inner_steps, device, dtype) if status == "running" else {}
            with clock.phase("rungs"):  # the budget ladder's snapshots on the same test episodes
                rung_rows = ladder.score(algorithm, tasks.test[:scoring.floor_count(cfg)], device, dtype) \
                    if status == "running" else []  # on the floor's episodes: references, like the floor
    except BaseException as err:
        tracker.close(err)
        raise
    finally:
        bar.close()
    if status == "running" and not math.isfinite(test["test_loss_mean"]):
        # Training stayed finite but adapting at test time blew up: the run is not a usable result.
        status, diverged_at = "diverged", iteration
    if not writer:  # rank 0 writes the run's files; the other ranks get its summary
        return distributed.from_writer(None)
    wall = elapsed + time.perf_counter() - began
    summary = results.summary_row(
        cfg, status="finished" if status == "running" else status, iterations_done=iteration,
        diverged_at=diverged_at,
        **{k: test.get(k, math.nan) for k in ("test_accuracy_mean", "test_accuracy_ci95", "test_loss_mean",
                                               "test_loss_ci95")},
        **{k: v for k, v in test.items() if k.startswith("test_common_")},
        **extra.get("floor", {}),
        tested_checkpoint=extra.get("best_iteration", iteration) if cfg.test_checkpoint == "best" else iteration,
        test_episodes=cfg.test_episodes, test_by_inner_steps=by_steps, **generalisation(seen, test, cfg),
        wall_time_s=wall, **meter.row(), time_split=timing.split(wall, meter.counts, clock.spent),
        floor_episodes=scoring.floor_count(cfg),
        # training time over every session of this run, so a run resumed only to test keeps its rate
        seconds_per_iteration=train_time / iteration if iteration else math.nan,
        peak_memory_mb=max(peak_mb, peak_memory_mb(device)), torch_threads=torch.get_num_threads(),
        processes=distributed.world_size(), rung_test_seconds=clock.spent.get("rungs", 0.0),
        # what it answered for: provenance.check_answer compares it whenever the run is read back
        data={k: tasks.record[k] for k in ("form", "root", "digest")} if tasks.record else None,
        **provenance.record(out), versions=results.library_versions())  # git_commit, dirty; environment.txt
    results.write_csv(out / "metrics.csv", rows, _metric_columns(rows))
    if status == "running":  # per-episode scores, for paired comparisons across algorithms
        columns = {**extra.get("floor_episodes", {}), **episode_columns}
        # the floor's columns are empty past its floor_episodes (the first episodes, shared by every run)
        results.write_csv(out / "episodes.csv", [{"episode": i, **{k: v[i] if i < len(v) else math.nan
                                                                   for k, v in columns.items()}}
                                                 for i in range(len(tasks.test))], ["episode", *columns])
        ladder.write(out, rung_rows, {"iteration": iteration, **meter.row()}, episode_columns)
    if status == "running":  # final weights, for `metacompare evaluate` (e.g. Lake's one-shot runs)
        buffer = io.BytesIO()
        torch.save({"config": cfg.to_dict(), "algorithm": algorithm.state_dict(),
                    "num_classes": tasks.train.num_classes}, buffer)
        results.atomic_write(out / "model.pt", buffer.getvalue())
    results.save_json(summary_path, summary)
    results.record_run(out.parent, summary)
    checkpoint_path.unlink(missing_ok=True)
    tracker.finish(summary)
    return distributed.from_writer(summary)


def generalisation(seen: dict[str, float], test: dict[str, float], cfg: RunConfig) -> dict[str, float]:
    """Training-class scores and ``generalisation_gap``: training-task score minus test score (accuracy,
    or MSE for regression, where a model that generalises worse has a negative gap)."""
    score = scoring.score_key(cfg)
    keys = ("accuracy_mean", "accuracy_ci95", "loss_mean", "loss_ci95")
    return {**{f"train_tasks_{k}": seen.get(k, math.nan) for k in keys},
            "generalisation_gap": seen.get(f"{score}_mean", math.nan) - test.get(f"test_{score}_mean", math.nan)}


def finished_run(out: Path, recorded: set[str] | None = None, cfg: RunConfig | None = None) -> dict[str, Any]:
    """The summary of the finished run in ``out``, making sure its runs.csv row exists and no
    checkpoint is left: a kill between writing summary.json and the row (or the checkpoint's removal)
    must neither lose the run from the table nor leave a stale checkpoint. ``recorded`` is the run ids
    already in runs.csv, when the caller has read it. Raises ``files.FileProblem`` if unfinished.
    With ``cfg``, the run is handed back as ``cfg``'s answer only if it answered for the same settings
    and data (:func:`metacompare.provenance.check_answer`)."""
    summary = results.read_summary(out / "summary.json")
    if cfg is not None:
        provenance.check_answer(summary, cfg, out)
    if recorded is None:
        recorded = {r["run_id"] for r in results.read_runs(out.parent)}
    if summary["run_id"] not in recorded:
        results.record_run(out.parent, summary)
    (out / "checkpoint.pt").unlink(missing_ok=True)
    return summary


def _keep_if_best(extra: dict, algorithm, cfg: RunConfig, iteration: int, val: dict[str, float]) -> None:
    """Remember the best-validation state (model selection as in MAML++ and Chen et al. 2019)."""
    if cfg.test_checkpoint != "best":
        return
    score = val[f"{scoring.score_key(cfg)}_mean"]
    if scoring.better(cfg, score, extra.get("best_score")):
        extra.update(best_score=score, best_iteration=iteration,
                     best_state=copy.deepcopy(algorithm.state_dict()))


def _finite(model: torch.nn.Module) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters())


def _metric_columns(rows: list[dict]) -> list[str]:
    first = ["iteration", "wall_time_s", "train_seconds", "train_cpu_seconds", "validation_seconds", "logging_seconds",
             "work", "train_loss", "train_accuracy"]
    return first + sorted({k for r in rows for k in r} - set(first))

