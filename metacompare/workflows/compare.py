"""``metacompare compare CONFIG --budget ...``: which meta-learner should I use on this data and budget?

One command: tune every algorithm with the same number of trials on validation episodes (or take the
config's settings, ``--no-tune``, or an earlier tune's chosen settings, ``--chosen tune/search.yaml``), train each chosen setting under the same budget (training seconds
or work) with several seeds, one after another or on several workers placed fairly, and write
``<experiment>/compare/report.md``, whose first paragraph is the answer with its evidence, then the
tables and learning curves against iterations, training seconds and work. Every algorithm is scored on
the very same test episodes, so the algorithms are compared pairwise on per-episode scores
(``episodes.csv``) and on per-seed means, with the paired tests of :mod:`metacompare.report.stats`;
the answer paragraph is worded by :mod:`metacompare.workflows.compare_answer`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from metacompare.training import budget, checkpoint, ladder, timing

from metacompare.engines import distributed

from metacompare.workflows import executors, headline, tune

from metacompare import files

from metacompare.storage import results
from metacompare.config.loading import RunConfig, with_overrides
from metacompare.errors import ConfigError, UserError
from metacompare.report import budgets, tables
from metacompare.training.runner import run_dir, train_and_evaluate
from metacompare.workflows.compare_answer import answer, budget_words
from metacompare.data.source import classifies


def compare(path: str | Path, budget_text: str, tuned: bool = True, seeds: int | None = None,
            overrides: Sequence[str] = (), results_dir: str | None = None, progress: bool = True,
            chosen_file: str | Path | None = None, procs: int = 1, workers: int = 1, executor: str = "local",
            address: str | None = None, rungs: int | None = None, target: float | None = None) -> Path:
    """Tune (or not, or take ``chosen_file``'s settings), train every algorithm under one budget with
    ``seeds`` seeds, write the report. ``procs`` > 1 trains each final run data-parallel on that many
    local processes where its engine allows it (:func:`train`); tuning trials stay on one.
    ``workers`` local processes or Ray tasks (``executor``, ``address``) run trials and final runs at
    once, placed fairly (:mod:`metacompare.workflows.executors`).
    Results go to ``<results_dir>/<experiment>_compare_<budget>/``; rerunning resumes and skips.
    ``rungs``: the budget ladder's rung count (default: the config's ``budget_rungs``, else 5), ``target``
    the time-to-target score (default: 95% of the best final score); :mod:`metacompare.report.budgets`."""
    if chosen_file is not None and not tuned:
        raise UserError("--chosen and --no-tune conflict: --chosen takes an earlier tune's settings, "
                        "--no-tune the config's; give one of them")
    bound = budget.parse_budget(budget_text)
    executors.check_placement(workers, procs, executor)  # before any tuning
    configs, spec = tune.load(path, overrides)
    changes = {"experiment": f"{configs[0].experiment}_compare_{budget.label(bound)}"}
    if results_dir:
        changes["results_dir"] = results_dir
    configs = [with_overrides(c, **changes) for c in configs]
    if target is not None and target > 1 and metric(configs[0])[1]:
        raise UserError(f"--target {target:g}: an accuracy target is a fraction from 0 to 1 (0.9 for 90%)")
    if spec.trial_budget is None:  # by default a trial gets a quarter of the comparison's budget
        spec.trial_budget = {kind: amount / 4 for kind, amount in bound.items()}
    source = read_chosen(chosen_file, configs) if chosen_file is not None else None
    plan = tune.final_configs(configs, source["chosen"] if source else {}, seeds or spec.seeds, bound, spec.evaluations)
    tuning = (spec.trials * len(configs), spec.trial_budget) if tuned and source is None else None
    print(timing.plan_words([(c.algorithm, processes(c, procs), _left(c)) for c in plan], budget_text, bound,
                            tuning, workers), file=sys.stderr)
    with results.experiment_lock(Path(configs[0].results_dir) / configs[0].experiment, "compare"):
        try:
            chosen = source["chosen"] if source else tune.tune(configs, spec, progress, workers, executor, address) \
                if tuned else {}
        except KeyboardInterrupt as err:
            raise Interrupted(f"tuning stopped; its finished trials are kept in {tune.tune_dir(configs[0])}: "
                              f"rerun the same command to resume") from err
        finals = tune.final_configs(configs, chosen, seeds or spec.seeds, bound, spec.evaluations)
        finals = [with_overrides(c, budget_rungs=rungs or c.budget_rungs or DEFAULT_RUNGS) for c in finals]
        where = executors.placement_words(workers, procs, executor, address)
        with executors.placed(where):
            summaries = train_all(finals, procs, progress, workers, executor, address)
        return write_report(finals, summaries, bound, chosen, spec if tuned else None, source, where, target)


DEFAULT_RUNGS = 5  # B/16, B/8, B/4, B/2 and B


def train_all(finals: list[RunConfig], procs: int = 1, progress: bool = True, workers: int = 1,
              executor: str = "local", address: str | None = None) -> list[dict[str, Any]]:
    """Every final run: one after another here with one progress line and its ETA
    (:func:`metacompare.training.timing.run_all`), or on ``workers`` / Ray (:func:`metacompare.workflows.executors.train_runs`).
    A stop says how many finished runs are kept (a rerun skips them)."""
    try:
        if executor == "local" and workers == 1:
            return timing.run_all(finals, lambda c: train(c, procs, progress), _finished, progress)
        return executors.train_runs(finals, functools.partial(train, procs=procs), workers, executor, address,
                                    procs, progress)
    except KeyboardInterrupt as err:
        kept = sum(_finished(c) for c in finals)
        raise Interrupted(f"{kept} of {len(finals)} final runs finished and are kept, the ones under "
                          f"way are checkpointed; rerun the same command to resume") from err


class Interrupted(KeyboardInterrupt):
    """A stopped comparison; ``user_message`` says what is kept (the CLI prints it)."""

    @property
    def user_message(self) -> str:
        return str(self)


def _finished(cfg: RunConfig) -> bool:
    return (run_dir(cfg) / "summary.json").exists()


def _left(cfg: RunConfig) -> float:
    """The fraction of ``cfg``'s training still to do, for the plan: 0 finished, else what its checkpoint
    has not yet spent of its time budget (1 without one, or for a work budget)."""
    if _finished(cfg):
        return 0.0
    with contextlib.suppress(Exception):  # only an estimate: a damaged checkpoint is named when resumed
        spent = files.load_torch(run_dir(cfg) / checkpoint.FILE, "")["extra"]["budget"]
        bound = cfg.budget.cpu_seconds or cfg.budget.seconds
        used = spent["train_cpu_seconds"] if cfg.budget.cpu_seconds else spent["train_seconds"]
        return min(1.0, max(0.01, 1 - used / bound))
    return 1.0


def processes(cfg: RunConfig, procs: int) -> int:
    """The processes :func:`train` gives ``cfg``: ``procs``, or one where the split is refused."""
    return procs if distributed.refusal(cfg, procs) is None else 1


def train(cfg: RunConfig, procs: int = 1, progress: bool = True) -> dict[str, Any]:
    """One final run, on ``procs`` local processes when the one-process maths allows the split
    (:func:`metacompare.engines.distributed.refusal`; Reptile's carried Adam state does not), else on this one.
    Under a ``cpu:`` budget every process's CPU time counts, so more processes finish sooner on the
    clock but do not buy more training; under a seconds budget they do."""
    reason = distributed.refusal(cfg, procs)  # None for one process
    if reason is not None:
        print(f"{cfg.algorithm}: one process ({reason.split(';')[0]})", file=sys.stderr)
    elif procs > 1 and not (run_dir(cfg) / "summary.json").exists():
        status = distributed.run_config(cfg, procs, progress)
        if status != 0:
            raise UserError(f"{cfg.algorithm} (seed {cfg.seed}) on {procs} processes stopped with exit status {status}; "
                            f"its progress is checkpointed in {run_dir(cfg)}: rerun the command to resume")
    return train_and_evaluate(cfg, progress=progress)  # here: trains, or reads the finished run


def read_chosen(path: str | Path, configs: list[RunConfig]) -> dict[str, Any]:
    """An earlier tune's record (``tune/search.yaml``, :func:`metacompare.workflows.tune.write_record`), checked:
    every algorithm of ``configs`` must have a chosen setting that makes a valid config. Returns the
    record with ``path`` added and ``chosen`` cut to these algorithms."""
    fix = "give the tune/search.yaml an earlier `metacompare compare` or `tune` wrote, or tune again without --chosen"
    try:
        record = files.read_yaml(path, fix)
    except files.FileProblem as err:
        raise UserError(f"--chosen {err}") from None
    chosen = record.get("chosen")
    if not isinstance(chosen, dict):
        raise UserError(f"--chosen {path}: has no 'chosen:' mapping of algorithm -> settings; {fix}")
    settings = {}
    for cfg in configs:
        setting = chosen.get(cfg.algorithm)
        if not isinstance(setting, dict):
            raise UserError(f"--chosen {path}: 'chosen' has no settings for {cfg.algorithm} (it has "
                            f"{', '.join(map(str, chosen)) or 'none'}); give a record that tuned {cfg.algorithm} too, "
                            f"or drop it from the config's algorithm list")
        try:
            with_overrides(cfg, **setting)
        except ConfigError as err:
            raise ConfigError(f"--chosen {path}: chosen.{cfg.algorithm}: {err}") from None
        settings[cfg.algorithm] = setting
    return {**record, "chosen": settings, "path": str(path)}


# ------------------------------------------------------------------------------------- evidence
def metric(cfg: RunConfig) -> tuple[str, bool, str]:
    """The per-episode column that ranks runs, whether higher is better, and how to name it."""
    if classifies(cfg):
        return "test_accuracy", True, "test accuracy"
    return "test_loss", False, "test MSE"


def episode_scores(configs: list[RunConfig], column: str) -> pd.DataFrame:
    """One row per (algorithm, seed, test episode): the runs' ``episodes.csv`` stacked."""
    frames = []
    for cfg in configs:
        frame = results.read_episodes(run_dir(cfg), cfg.test_episodes)  # checked: never fewer episodes
        if frame is not None and column in frame:
            frame = frame[["episode", column]].rename(columns={column: "score"})
            frames.append(frame.assign(algorithm=cfg.algorithm, seed=cfg.seed))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["algorithm", "seed", "episode", "score"])


def paired_table(scores: pd.DataFrame, over: str, higher_is_better: bool) -> pd.DataFrame | None:
    """Every pair of algorithms compared on shared episodes or seeds: mean difference, 95% CI, paired
    t and Wilcoxon p-values (Holm-corrected) and a verdict, from :func:`metacompare.report.stats.pairwise`
    (written by another contributor; imported here so this module works, without verdicts, before
    that module exists)."""
    try:
        from metacompare.report.stats import pairwise
    except ImportError:
        return None
    return pairwise(scores, over, higher_is_better)


def algorithm_table(configs: list[RunConfig], summaries: list[dict], column: str, chosen: dict) -> pd.DataFrame:
    """Per algorithm: score across seeds (mean, Student-t 95% CI), the untrained floor and the cost."""
    runs = pd.DataFrame([{**s, "algorithm": c.algorithm} for c, s in zip(configs, summaries)])
    rows = []
    for name, group in runs.groupby("algorithm", sort=False):
        finished = group[group["status"] == "finished"]
        mean, ci = results.mean_ci95(list(finished[f"{column}_mean"]))
        floor, _ = results.mean_ci95(list(finished.get(f"floor_{column.removeprefix('test_')}_mean", [])))
        rows.append({"algorithm": name, "seeds": len(group), "finished": len(finished), "score": mean,
                     "score_ci95": ci, "floor": floor,
                     **{k: float(finished[k].mean()) if k in finished and len(finished) else math.nan
                        for k in ("iterations_done", "train_seconds", "train_cpu_seconds", "validation_seconds", "work",
                                  "peak_memory_mb")},
                     "setting": ", ".join(f"{k}={_short(v)}" for k, v in chosen.get(name, {}).items()) or "as configured"})
    return pd.DataFrame(rows)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# ------------------------------------------------------------------------------------- writing
def write_report(configs: list[RunConfig], summaries: list[dict], bound: dict, chosen: dict,
                 spec: tune.TuneSpec | None, source: dict | None = None, placement: str | None = None,
                 target: float | None = None) -> Path:
    """``<experiment>/compare/report.md`` plus its tables (CSV) and ``learning_curves.png``; ``source``:
    the earlier tune's record the settings came from (:func:`read_chosen`), if any; ``placement``: where
    this command trains runs (:func:`metacompare.workflows.executors.placement_words`), said for runs
    that recorded none (:func:`metacompare.workflows.executors.placement_line`)."""
    out = Path(configs[0].results_dir) / configs[0].experiment / "compare"
    out.mkdir(parents=True, exist_ok=True)
    column, higher, name = metric(configs[0])
    table = algorithm_table(configs, summaries, column, chosen)
    scores = episode_scores(configs, column)
    against_floor = headline.floor_pairs([(c.algorithm, c.seed, results.read_episodes(run_dir(c), c.test_episodes))
                                          for c in configs if (run_dir(c) / "episodes.csv").is_file()], column)
    pairs, seed_pairs = (paired_table(scores, over, higher) if not scores.empty else None
                         for over in ("episode", "seed"))
    results.write_csv(out / "algorithms.csv", table.to_dict("records"), list(table.columns))
    for label, frame in (("pairwise_episodes", pairs), ("pairwise_seeds", seed_pairs)):
        if frame is not None:
            results.write_csv(out / f"{label}.csv", frame.to_dict("records"), list(frame.columns))
    curves = learning_curves(configs, out / "learning_curves.png",
                             "train_cpu_seconds" if "cpu_seconds" in bound else "train_seconds")
    stacked = ladder.stack([(c, s, run_dir(c)) for c, s in zip(configs, summaries)], column)
    rungs, kind = budgets.table(stacked, dict(zip(table["algorithm"], table["floor"])), bound, higher), next(iter(bound))
    results.write_csv(out / "budgets.csv", rungs.to_dict("records"), list(rungs.columns))
    drawn = budgets.figure(rungs, out, kind, higher)
    cfg = configs[0]
    lines = [f"# Which meta-learner? {cfg.dataset}, {cfg.ways}-way {cfg.shots}-shot, {budget_words(bound)} each", "",
             " ".join(filter(None, [answer(table, pairs, seed_pairs, higher, name, bound, classifies(cfg),
                                           against_floor, learned_at(stacked, against_floor, bound, higher)),
                                    budgets.winner_words(rungs, kind),
                                    budgets.target_words(rungs, kind, higher, target)])), "",
             "## Algorithms", "", _table(out, "algorithms", classifies(cfg)),
             "Score: mean over seeds of each run's mean over the same test episodes, with its 95% interval across "
             "seeds (with one seed: over that run's test episodes); untrained floor: the network before any training, "
             "under the same test procedure; training seconds exclude validation (timed apart). Every column "
             "unrounded, with validation seconds, work in example-passes (forward 1, backward 2, second order "
             "counted) and peak memory: `algorithms.csv`.", "",
             *([executors.placement_line(summaries, placement), ""] if placement else [])]
    for title, label, frame in (("Paired comparisons over test episodes", "pairwise_episodes", pairs),
                                ("Paired comparisons over seeds", "pairwise_seeds", seed_pairs)):
        if frame is not None:
            lines += [f"## {title}", "", _table(out, label, classifies(cfg)), PAIRED_WORDS, ""]
    if source is not None:
        lines += ["## Tuning", "", _source_words(source, spec), ""]
    elif spec is not None:
        lines += ["## Tuning", "", f"{spec.trials} Optuna trials per algorithm (TPE, seed {spec.seed}; median "
                  f"pruner), each under {spec.trial_budget}, scored on validation episodes only. Search space, "
                  f"chosen settings: `tune/search.yaml`; best validation score after each trial: "
                  f"`tune/tuning_curve.csv`.", ""]
    if curves:
        lines += ["## Learning curves", "", "![learning curves](learning_curves.png)", ""]
    if drawn:
        lines += ["## The answer at every budget", "", LADDER_WORDS, "", tables.frame_table(budgets.shown(rungs, kind, higher)), "",
                  f"![test score against budget]({drawn}.png)", ""]
    lines += _time_lines(configs, summaries, out)
    report = out / "report.md"
    results.atomic_write(report, "\n".join(lines))
    return report


def _time_lines(configs: list[RunConfig], summaries: list[dict], out: Path) -> list[str]:
    """The report's wall-time split per run (:mod:`metacompare.training.timing`), also as ``time_split.csv``."""
    rows = timing.split_table([(c.algorithm, c.seed, s.get("time_split"), s.get("wall_time_s", math.nan))
                               for c, s in zip(configs, summaries)])
    results.write_csv(out / "time_split.csv", rows, list(rows[0]))
    return ["## Where the time went", "", tables.frame_table(pd.DataFrame(rows)), "",
            "Wall seconds per run: training (the budget's), validation, test, floor (the untrained network), "
            "train_tasks (the training-task score of the generalisation gap), logging (the logged training fit) "
            "and waiting (building, checkpoints, files, other processes); training_share: training over the "
            "run's wall time. Runs recorded before the split existed show n/a.", ""]


LADDER_WORDS = ("Each smaller budget is a snapshot of the same run, taken when its training crossed that budget, "
                "and scored on the same test episodes; verdicts compare each algorithm with that budget's best, "
                "paired over the shared episodes, Holm-corrected within the budget (`budgets.csv`). A schedule "
                "that follows the budget (an annealed outer step, a cosine rate) is mid-way at a snapshot.")


def learned_at(stacked: pd.DataFrame, against_floor: pd.DataFrame, bound: dict, higher: bool) -> dict[str, list[str]]:
    """Per smaller rung of the ladder (``--budget`` text, smallest first): the algorithms whose snapshot
    beats their untrained network, paired over the episodes both were scored on, Holm-corrected within
    the rung (:func:`metacompare.workflows.headline.floor_tests`), for the no-learning headline."""
    floors = against_floor[["algorithm", "seed", "episode", "floor"]]
    out: dict[str, list[str]] = {}
    for fraction, group in stacked[stacked["fraction"] < 1].groupby("fraction"):
        units = group[["algorithm", "seed", "episode", "score"]].astype({"seed": int, "episode": int})
        pairs = units.merge(floors.astype({"seed": int, "episode": int}), on=["algorithm", "seed", "episode"])
        tests = headline.floor_tests(pairs, higher)
        out[headline.suggested_budget(bound, fraction)] = [t.algorithm for t in tests.values() if t.learned]
    return out


def _source_words(source: dict, spec: tune.TuneSpec | None) -> str:
    """Where ``--chosen`` settings came from, and whether their trials ran under this comparison's
    trial budget (a quarter of the budget unless the config says otherwise)."""
    earlier = source.get("trial_budget")
    words = (f"Not tuned here: each algorithm's setting (the table's last column) is the one chosen by an earlier "
             f"tune, read from `{source['path']}` ({source.get('trials_per_algorithm', '?')} trials per algorithm, "
             f"each under {earlier}).")
    if spec is not None and earlier != spec.trial_budget:
        words += (f" It was tuned at another budget: a tune for this comparison would give each trial "
                  f"{spec.trial_budget}.")
    return words


PAIRED_WORDS = ("Difference: first minus second, the mean over the shared test episodes (or seeds) with its 95% "
                "interval, in points for accuracy. p-values are Holm-corrected over every pair of this table, so "
                "the chance of any false verdict stays at 5%; the verdict follows the paired t-test, the Wilcoxon "
                "signed-rank test is shown beside it. Unrounded: the CSV file of the same name.")


def _table(out: Path, label: str, percent: bool) -> str:
    """``<label>.csv``, just written, as the documentation renders it (:mod:`metacompare.report.tables`:
    percent, rounded, thousands separators), so the report and the docs show one table alike."""
    source = f"{out.parent.name}/compare/{label}.csv"  # relative to the results folder
    view = tables.view_pairwise if label.startswith("pairwise") else tables.view_compare
    return view(out.parent.parent, source, {"spec": "~.2f" if percent else ".3g"}, out / "report.md")


def learning_curves(configs: list[RunConfig], path: Path, seconds: str = "train_seconds") -> bool:
    """Validation score against iterations, training seconds (``seconds``: the wall-clock or the CPU-time
    column, as the budget counts them) and work; one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from metacompare.report.draw import style

    key = f"val_{'accuracy' if classifies(configs[0]) else 'loss'}_mean"
    frames = [(c, results.read_metrics(run_dir(c))) for c in configs]
    frames = [(c, f) for c, f in frames if f is not None and key in f and {seconds, "work"} <= set(f.columns)]
    if not frames:
        return False
    colors = {name: f"C{i}" for i, name in enumerate(dict.fromkeys(c.algorithm for c, _ in frames))}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=True)
    for ax, x, label in zip(axes, ("iteration", seconds, "work"),
                            ("meta-iterations", "training seconds" + (" (CPU)" if "cpu" in seconds else ""),
                             "work (example-passes)")):
        labelled: set[str] = set()  # one legend entry per algorithm, on its first run that has a curve
        for cfg, frame in frames:
            ax.plot(frame[x], frame[key], marker=".", color=colors[cfg.algorithm], alpha=0.8,
                    label=None if cfg.algorithm in labelled else cfg.algorithm)
            labelled.add(cfg.algorithm)
        ax.set_xlabel(label)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))  # 10,000s of iterations: 1e4 ticks
    axes[0].set_ylabel(key.removeprefix("val_").replace("_mean", "") + " (validation)")
    axes[0].legend()
    fig.tight_layout()
    style.save(fig, path.parent, path.stem, dpi=110, svg=False)  # the same bytes when the runs are the same
    plt.close(fig)
    return True
