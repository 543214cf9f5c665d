"""Train and evaluate one configuration, in named phases, with checkpoints so that nothing is lost on a crash.

``train_and_evaluate(cfg)`` is the whole job, and reads as its phases: :func:`prepare` (build tasks,
model and algorithm), :func:`resume` (from the last checkpoint), :func:`score_floor` (the untrained
network), :func:`train` (meta-iterations charged to the budget, each followed where due by
:func:`validate` and the budget ladder's snapshots), :func:`run_test`, :func:`score_rungs` and
:func:`record` (the run's files and its row in the experiment's ``runs.csv``). A run's state between phases is one
:class:`~metacompare.training.checkpoint.RunState`, which also decides its status. Re-running a
finished configuration returns its summary (once :func:`metacompare.storage.provenance.check_answer` finds
the same settings and data); re-running an interrupted one resumes from its last checkpoint and
ends with the same numbers as an uninterrupted run (CPU, same seed).
"""

from __future__ import annotations

import copy
import math
import resource
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from tqdm import tqdm

from metacompare.storage import provenance, results, tracking
from metacompare.training import budget, scoring, timing
from metacompare.engines import distributed
from metacompare.models import precision
from metacompare.training.build import Run as Built, build_run
from metacompare.config.loading import RunConfig, dump
from metacompare.data.splits import write_record
from metacompare.training.ladder import Ladder
from metacompare.training.scoring import evaluate
from metacompare.training import checkpoint
from metacompare.training.checkpoint import RunState, stop_signals_raise

RUN_THREADS = 1  # torch threads per run, whatever --workers is: see pin_threads


def run_dir(cfg: RunConfig) -> Path:
    return Path(cfg.results_dir) / cfg.experiment / cfg.run_id()


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def pin_threads() -> None:
    """One torch thread per run, so that a run's numbers do not depend on how many cores or sweep
    workers there are (a parallel reduction sums in a thread-count-dependent order). Parallelism
    comes from running several runs at once (``sweep --workers``)."""
    if torch.get_num_threads() != RUN_THREADS:
        torch.set_num_threads(RUN_THREADS)


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


@dataclass
class Run:
    """What every phase works on: the built run, its folder, its state and its instruments."""

    cfg: RunConfig
    out: Path
    built: Built
    state: RunState
    writer: bool  # rank 0, the only process that writes files
    tracker: tracking.Tracker
    clock: timing.PhaseClock  # the floor, test, train_tasks and rungs phases' wall seconds
    meter: budget.BudgetMeter
    ladder: Ladder
    began: float  # this session's start on the wall clock

    @property
    def algorithm(self):
        return self.built.algorithm

    def wall(self) -> float:
        """The run's wall seconds, over every session: the floor, training, scoring (timing.split)."""
        return self.state.elapsed + time.perf_counter() - self.began

    def save_checkpoint(self) -> None:
        if self.writer:
            checkpoint.save(self.out / checkpoint.FILE, self.state, self.algorithm, self.cfg,
                            self.built.tasks.train.rng, self.wall(), peak_memory_mb(self.built.device))


def train_and_evaluate(cfg: RunConfig, progress: bool = True, force: bool = False,
                       on_validation: Callable[[int, dict], None] | None = None) -> dict[str, Any]:
    """Run ``cfg`` to the end (or resume it) and return its summary; see the module docstring.
    ``on_validation(evaluation_index, scores)`` follows each validation (a tuner's pruner may raise there)."""
    out = run_dir(cfg)
    distributed.start(cfg.device)  # under torchrun: join the group (one process: nothing)
    if (done := _finished(out, cfg, force)) is not None:
        return done
    with results.run_lock(out) if distributed.is_writer() else nullcontext():  # rank 0 writes, and locks
        if (done := _finished(out, cfg, force)) is not None:  # another process finished it meanwhile
            return done
        built = prepare(cfg, out, force)
        run = resume(cfg, out, built)
        with tracked(run.tracker):
            score_floor(run)
            train(run, progress, on_validation)
            with stop_signals_raise():  # the last checkpoint is whole, so scoring may stop at any point
                scores = run_test(run)
                rungs = score_rungs(run)
        return record(run, scores, rungs)


def _finished(out: Path, cfg: RunConfig, force: bool) -> dict[str, Any] | None:
    """The finished run's summary (checked, see :func:`finished_run`), or None to train it."""
    if not distributed.from_writer((out / "summary.json").exists() and not force):
        return None
    return finished_run(out, cfg=cfg) if distributed.is_writer() else results.read_summary(out / "summary.json")


def prepare(cfg: RunConfig, out: Path, force: bool) -> Built:
    """Build the run (data errors surface here, before anything is written) and clear what a dead
    writer left (see :func:`_start_clean`)."""
    pin_threads()
    distributed.check(cfg)
    built = build_run(cfg)
    if distributed.is_writer():
        with results.removed_if_refused(out):
            _start_clean(out, cfg, force)
            if built.tasks.record is not None:  # a user dataset: its split into the run, its digest checked
                write_record(built.tasks.record, out)
    return built


def resume(cfg: RunConfig, out: Path, built: Built) -> Run:
    """The run where its last checkpoint left it (a fresh state without one), with its tracker, budget
    meter, ladder and phase clock carrying on from their checkpointed counters."""
    writer = distributed.is_writer()
    state = checkpoint.resume(out / checkpoint.FILE, cfg, built.algorithm, built.tasks.train.rng)
    tracker = tracking.open_tracker(cfg, out, state.iteration) if writer else tracking.Tracker()
    if writer:
        results.atomic_write(out / "config.yaml", dump(cfg))
    provenance.note_placement(state.extra)
    meter = budget.BudgetMeter(cfg, budget.iteration_work(built.algorithm, cfg), state.extra)
    ladder = Ladder(cfg, meter.per_iteration, state.extra, out)  # snapshots at smaller budgets (budget_rungs)
    return Run(cfg, out, built, state, writer, tracker, timing.PhaseClock(state.extra), meter, ladder,
               time.perf_counter())


@contextmanager
def tracked(tracker: tracking.Tracker) -> Iterator[None]:
    """The tracker learns why a run stopped early (an error, a stop signal, a pruned trial)."""
    try:
        yield
    except BaseException as err:
        tracker.close(err)
        raise


def score_floor(run: Run) -> None:
    """The untrained network under the run's test procedures, on the first ``floor_episodes`` test
    episodes (scoring.floor_count): what training must beat. Once per run, kept across a resume."""
    extra, built = run.state.extra, run.built
    if "floor" in extra:
        return
    extra["floor_episodes"] = {}
    with run.clock.phase("floor"):
        extra["floor"] = scoring.score_test(built.algorithm, built.tasks.test[:scoring.floor_count(run.cfg)],
                                            run.cfg, built.device, built.dtype, "floor_", extra["floor_episodes"])


def train(run: Run, progress: bool, on_validation: Callable[[int, dict], None] | None) -> None:
    """Meta-train until the iterations or the budget are spent, validating where due, taking the budget
    ladder's snapshots and checkpointing. A first stop signal ends it after a whole, checkpointed
    iteration; a non-finite loss ends it as diverged."""
    cfg, state = run.cfg, run.state
    resumed_at = state.iteration
    run.ladder.cross(state.iteration, run.algorithm, state.extra)  # a rung below one iteration: the initial weights
    with progress_bar(run, progress) as bar, checkpoint.deferred_stop() as stop:
        fit: dict[str, float] = {}  # the last measured training fit (every fit_interval iterations)
        while state.healthy and state.iteration < cfg.iterations and not run.meter.spent(state.iteration):
            metrics = step(run)
            if not state.healthy:
                bar.write(f"{cfg.algorithm}: training loss became non-finite at iteration {state.iteration}; "
                          f"run recorded as diverged")
                return
            bar.update(1)
            if metrics:
                fit = metrics
                bar.set_postfix({k: f"{v:.3f}" for k, v in metrics.items()}, refresh=False)  # drawn at mininterval
                run.tracker.train(state.iteration, metrics)
            if run.meter.due(state.iteration) or state.iteration == cfg.iterations:
                validate(run, fit, on_validation)
            # after this iteration's validation: under test_checkpoint: best a run of its own that
            # stopped here would test the best state including it
            run.ladder.cross(state.iteration, run.algorithm, state.extra)
            stopping = distributed.any_rank(stop.signal is not None)  # every rank stops at one iteration
            if state.iteration % cfg.checkpoint_interval == 0 or stopping:
                run.save_checkpoint()
            if stopping:
                raise KeyboardInterrupt(f"signal {stop.signal or 'on another process'}")
        if state.healthy and state.iteration > resumed_at and state.iteration % cfg.checkpoint_interval:
            run.save_checkpoint()  # training is done: a kill during testing need not redo it


@contextmanager
def progress_bar(run: Run, progress: bool) -> Iterator[tqdm]:
    timed = run.cfg.budget.seconds is not None or run.cfg.budget.cpu_seconds is not None  # no count to show
    bar = tqdm(total=None if timed else run.meter.planned, initial=run.state.iteration, desc=run.cfg.algorithm,
               unit="it", disable=not progress or not run.writer, dynamic_ncols=True, file=sys.stderr,
               mininterval=0.5 if sys.stderr.isatty() else 30.0)
    try:
        yield bar
    finally:
        bar.close()


def step(run: Run) -> dict[str, float]:
    """One meta-iteration on a fresh meta-batch, charged to the budget (budget.BudgetMeter.charge
    decides what counts), its training fit measured on the first and every ``fit_interval``-th
    iteration (else no metrics). A non-finite loss or weight marks the run diverged."""
    cfg, built, state = run.cfg, run.built, run.state
    began = budget.clock()
    batch = [precision.prepare_task(built.tasks.train.sample().to(built.device, built.dtype), cfg)
             for _ in range(cfg.meta_batch_size)]
    stepped = time.perf_counter()
    built.algorithm.measure_fit = (state.iteration + 1) % cfg.fit_interval == 0 or state.iteration == 0
    built.algorithm.set_outer_lr(run.meter.fraction(state.iteration))
    metrics = built.algorithm.meta_train_step(batch)
    state.train_time += run.meter.charge(began, stepped, built.algorithm)
    state.iteration += 1
    if not all(math.isfinite(v) for v in metrics.values()) or not _finite(built.model):
        state.diverge(state.iteration)
    return metrics


def validate(run: Run, metrics: dict[str, float], on_validation: Callable[[int, dict], None] | None) -> None:
    """Score the validation episodes now: a metrics row (with ``metrics``, the last measured training fit),
    the best state so far (test_checkpoint: best), the tracker and ``on_validation``. Its time is counted
    apart from the budget."""
    cfg, built, state = run.cfg, run.built, run.state
    tick = time.perf_counter()
    val = evaluate(built.algorithm, built.tasks.validation, cfg.eval_inner_steps, built.device, built.dtype)
    run.meter.validated(time.perf_counter() - tick)
    state.rows.append({"iteration": state.iteration, "wall_time_s": run.wall(), **run.meter.row(),
                       "train_loss": metrics.get("loss", math.nan), "train_accuracy": metrics.get("accuracy", math.nan),
                       **{f"val_{k}": v for k, v in val.items()}})
    if run.writer:
        results.write_csv(run.out / "metrics.csv", state.rows, _metric_columns(state.rows))
    _keep_if_best(state.extra, built.algorithm, cfg, state.iteration, val)
    run.tracker.validation(state.iteration, state.rows[-1], peak_memory_mb(built.device))
    if on_validation is not None:
        on_validation(len(state.rows), val)


def run_test(run: Run) -> dict[str, Any]:
    """Score the tested state (the last, or the best-validated under test_checkpoint: best) on the test
    episodes with every test procedure, and on fresh tasks of the training classes (generalisation).
    A non-finite test loss marks the run diverged; a diverged run is not scored."""
    cfg, built, state = run.cfg, run.built, run.state
    scores: dict[str, Any] = {"test": {}, "by_steps": {}, "seen": {}, "episodes": {}}
    if not state.healthy:
        return scores
    if cfg.test_checkpoint == "best" and "best_state" in state.extra:
        built.algorithm.load_state_dict(state.extra["best_state"])
    with run.clock.phase("test"):
        scores["test"] = scoring.score_test(built.algorithm, built.tasks.test, cfg, built.device, built.dtype,
                                            "test_", scores["episodes"])
        scores["by_steps"] = {steps: evaluate(built.algorithm, built.tasks.test, steps, built.device, built.dtype)
                              for steps in cfg.test_inner_steps}
    with run.clock.phase("train_tasks"):  # generalisation: the same score on fresh tasks of the training classes
        scores["seen"] = scoring.evaluate(built.algorithm, built.tasks.train_episodes[:scoring.floor_count(cfg)],
                                          cfg.eval_inner_steps, built.device, built.dtype)
    if not math.isfinite(scores["test"]["test_loss_mean"]):
        state.diverge(state.iteration)  # training stayed finite but adapting at test time blew up
    else:
        state.tested = True
    return scores


def score_rungs(run: Run) -> list[dict[str, Any]]:
    """The budget ladder's snapshots on the floor's test episodes (references, like the floor)."""
    if not run.state.tested:
        return []
    built = run.built
    with run.clock.phase("rungs"):
        return run.ladder.score(built.algorithm, built.tasks.test[:scoring.floor_count(run.cfg)], built.device,
                                built.dtype)


def record(run: Run, scores: dict[str, Any], rungs: list[dict[str, Any]]) -> dict[str, Any]:
    """Write the run's files (metrics, per-episode scores, rungs, final weights, summary), its row in
    runs.csv, and remove its checkpoint. Rank 0 writes; every rank returns its summary."""
    if not run.writer:
        return distributed.from_writer(None)
    state, out, extra = run.state, run.out, run.state.extra
    summary = summarise(run, scores)
    results.write_csv(out / "metrics.csv", state.rows, _metric_columns(state.rows))
    if state.tested:  # per-episode scores, for paired comparisons across algorithms
        columns = {**extra.get("floor_episodes", {}), **scores["episodes"]}
        # the floor's columns are empty past its floor_episodes (the first episodes, shared by every run)
        results.write_csv(out / "episodes.csv", [{"episode": i, **{k: v[i] if i < len(v) else math.nan
                                                                   for k, v in columns.items()}}
                                                 for i in range(len(run.built.tasks.test))], ["episode", *columns])
        run.ladder.write(out, rungs, {"iteration": state.iteration, **run.meter.row()},
                         scores["episodes"])
        # final weights, for `metacompare evaluate` (e.g. Lake's one-shot runs)
        checkpoint.write(out / "model.pt", {"config": run.cfg.to_dict(), "algorithm": run.algorithm.state_dict(),
                                            "num_classes": run.built.tasks.train.num_classes})
    results.save_json(out / "summary.json", summary)
    results.record_run(out.parent, summary)
    (out / checkpoint.FILE).unlink(missing_ok=True)
    run.tracker.finish(summary)
    return distributed.from_writer(summary)


def summarise(run: Run, scores: dict[str, Any]) -> dict[str, Any]:
    """The run's summary.json: its status, test scores, floor, budget counters and where its time went."""
    cfg, state, extra, test = run.cfg, run.state, run.state.extra, scores["test"]
    wall, record_ = run.wall(), run.built.tasks.record
    return results.summary_row(
        cfg, status=state.status, iterations_done=state.iteration, diverged_at=state.diverged_at,
        **{k: test.get(k, math.nan) for k in ("test_accuracy_mean", "test_accuracy_ci95", "test_loss_mean",
                                               "test_loss_ci95")},
        **{k: v for k, v in test.items() if k.startswith("test_common_")}, **extra.get("floor", {}),
        tested_checkpoint=extra.get("best_iteration", state.iteration) if cfg.test_checkpoint == "best"
        else state.iteration,
        test_episodes=cfg.test_episodes, test_by_inner_steps=scores["by_steps"],
        **generalisation(scores["seen"], test, cfg),
        wall_time_s=wall, **run.meter.row(), time_split=timing.split(wall, run.meter.counts, run.clock.spent),
        metrics_rows=len(state.rows),  # so that a metrics.csv cut at a line end is found (results.read_metrics)
        # training time over every session of this run, so a run resumed only to test keeps its rate
        seconds_per_iteration=state.train_time / state.iteration if state.iteration else math.nan,
        peak_memory_mb=max(state.peak_mb, peak_memory_mb(run.built.device)), torch_threads=torch.get_num_threads(),
        processes=distributed.world_size(), placements=extra.get("placements") or None,
        rung_test_seconds=run.clock.spent.get("rungs", 0.0), floor_episodes=scoring.floor_count(cfg),
        # what it answered for: provenance.check_answer compares it whenever the run is read back
        data={k: record_[k] for k in ("form", "root", "digest")} if record_ else None,
        **provenance.record(run.out), versions=results.library_versions())  # git_commit, dirty; environment.txt


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
    and data (:func:`metacompare.storage.provenance.check_answer`)."""
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

