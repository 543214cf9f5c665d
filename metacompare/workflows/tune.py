"""Tuning with equal effort: the same number of Optuna trials for every algorithm, on validation only.

A tune file is a config (or ``base: CONFIG`` plus ``set:`` edits) with a ``tune:`` section::

    base: ../configs/sine.yaml
    tune:
      trials: 12                  # the same for every algorithm
      seed: 0                     # TPE sampler's seed
      seeds: 3                    # training seeds of each chosen setting
      trial_budget: {work: 2e5}   # each trial's budget: iterations, work or seconds (null: iterations / 4)
      evaluations: 4              # validations per trial, fed to the median pruner
      space:                      # for every algorithm: log / float / int ranges, or a choice list
        inner_lr: {log: [0.001, 0.5]}
        inner_steps: {int: [1, 5]}
        meta_batch_size: {choice: [5, 10, 25]}
      per_algorithm:              # replaces or adds dimensions for one algorithm
        reptile: {outer_lr: {log: [0.03, 1.0]}}

Each algorithm gets one Optuna study (TPE sampler, Bergstra et al. 2011; median pruner fed the
validation score at each evaluation) stored in ``<results>/<experiment>/tune/optuna.sqlite3``, so a
killed tune resumes: finished trials are kept and a trial that was running is retried with the same
setting (its run resumes from its checkpoint). The sampler's random state is not stored, so the
settings proposed after a resume can differ from an uninterrupted tune. Trials are scored on the
validation episodes only (their test set is cut to one episode and never read); the chosen setting
is then trained with ``seeds`` seeds and scored once on the test episodes.

With several workers (``--workers N`` or ``--executor ray``) the trials run at once, every worker
drawing from and telling the same study file, with the algorithms in turn; each algorithm still gets
exactly ``trials`` trials. A trial then sees only the trials finished when it starts.

The ``tune:`` section is read and checked by :mod:`metacompare.workflows.tune_spec`.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import yaml
from tqdm import tqdm

from metacompare.workflows import executors

from metacompare.storage import provenance, results

from metacompare.training import scoring
from metacompare.config.loading import RunConfig, with_overrides
from metacompare.errors import UserError
from metacompare.training.runner import run_dir, train_and_evaluate
from metacompare.workflows.tune_spec import BUDGET_KINDS, UNCAPPED, TuneSpec, load  # tune.load: compare's too
from metacompare.data.source import classifies


# ------------------------------------------------------------------------------------- trials
def tune_dir(cfg: RunConfig) -> Path:
    return Path(cfg.results_dir) / cfg.experiment / "tune"


def suggest(trial, space: dict[str, dict]) -> dict[str, Any]:
    """One setting drawn by the trial's sampler from the declared space."""
    params = {}
    for name, dimension in space.items():
        kind, values = next(iter(dimension.items()))
        if kind == "choice":
            params[name] = trial.suggest_categorical(name, values)
        elif kind == "int":
            params[name] = trial.suggest_int(name, int(values[0]), int(values[1]))
        else:
            params[name] = trial.suggest_float(name, float(values[0]), float(values[1]), log=kind == "log")
    return params


def trial_config(cfg: RunConfig, params: dict[str, Any], spec: TuneSpec) -> RunConfig:
    """A trial's run: the sampled setting under the trial budget, validated at ``evaluations`` points,
    its test cut to one episode (never read: trials see validation only)."""
    bound = spec.trial_budget or {"iterations": max(1, cfg.iterations // 4)}
    kind, amount = next(iter(bound.items()))
    limits = {"seconds": None, "cpu_seconds": None, "work": None, "evaluations": spec.evaluations}
    if kind != "iterations":
        limits[kind] = amount
    return with_overrides(cfg, **params, results_dir=str(tune_dir(cfg)), experiment=cfg.algorithm,
                          test_episodes=1, test_inner_steps=[], common_evaluation=None, budget=limits,
                          iterations=int(amount) if kind == "iterations" else UNCAPPED)


def selected_score(cfg: RunConfig, rows: pd.DataFrame | None) -> float:
    """The validation score the trial's run would be tested at: its best or its last evaluation."""
    column = f"val_{scoring.score_key(cfg)}_mean"
    if rows is None or rows.empty or column not in rows:
        return math.nan
    values = rows[column].dropna()
    if values.empty:
        return math.nan
    if cfg.test_checkpoint == "best":
        return float(values.max() if classifies(cfg) else values.min())
    return float(values.iloc[-1])


def objective(cfg: RunConfig, spec: TuneSpec, progress: bool):
    """The Optuna objective for one algorithm: train a trial run, report validations, return its score."""
    import optuna

    def run(trial) -> float:
        trial_cfg = trial_config(cfg, suggest(trial, spec.space_for(cfg.algorithm)), spec)

        def report(step: int, val: dict[str, float]) -> None:
            score = val[f"{scoring.score_key(cfg)}_mean"]
            trial.report(score if math.isfinite(score) else _worst(cfg), step)
            if trial.should_prune():
                raise optuna.TrialPruned()

        try:
            summary = train_and_evaluate(trial_cfg, progress=progress, on_validation=report)
        except optuna.TrialPruned:
            shutil.rmtree(run_dir(trial_cfg), ignore_errors=True)
            raise
        trial.set_user_attr("run_id", trial_cfg.run_id())
        if summary["status"] != "finished":
            return _worst(cfg)
        score = selected_score(cfg, results.read_metrics(run_dir(trial_cfg)))
        return score if math.isfinite(score) else _worst(cfg)

    return run


def _worst(cfg: RunConfig) -> float:
    return -math.inf if classifies(cfg) else math.inf


def study_for(cfg: RunConfig, spec: TuneSpec, index: int = 0):
    """The algorithm's study in the experiment's sqlite file (created, or loaded to resume), its TPE
    sampler seeded by ``index``, the trial's place among the algorithm's trials: concurrent workers
    loading the same history then still draw different settings. Workers wait up to a minute for
    the file's write lock."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = tune_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{(folder / 'optuna.sqlite3').resolve()}",
                                         engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.create_study(
        study_name=cfg.algorithm, storage=storage, load_if_exists=True,
        direction="maximize" if classifies(cfg) else "minimize",
        sampler=optuna.samplers.TPESampler(seed=spec.seed + index),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=min(5, max(1, spec.trials // 3)), n_warmup_steps=1))


@dataclass
class TrialJob:
    """One tuning trial, to run in any process: the algorithm, the spec, and the trial's place among
    the algorithm's trials (:func:`study_for`)."""

    cfg: RunConfig
    spec: TuneSpec
    index: int


def one_trial(job: TrialJob, progress: bool = True, study=None) -> str:
    """Draw a setting from the algorithm's study (a setting left by a killed trial first; ``study``:
    one already loaded, else the job's own), train it, tell the study; return the trial's state. A
    stop leaves the trial running, for the next start."""
    import optuna
    from optuna.trial import TrialState

    study = study or study_for(job.cfg, job.spec, job.index)
    trial = study.ask()
    try:
        value = objective(job.cfg, job.spec, progress)(trial)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
        return "pruned"
    except Exception:
        study.tell(trial, state=TrialState.FAIL)
        raise
    study.tell(trial, value)
    return "complete"


def run_trial(job: TrialJob, cwd: str | None = None) -> dict[str, str]:
    """:func:`one_trial` in a worker process or Ray task; an error is returned, not raised."""
    executors.enter(cwd)
    try:
        return {"state": one_trial(job, progress=False)}
    except Exception as err:
        return {"state": "fail", "error": f"{type(err).__name__}: {err}"}


def _lost_trial(job: TrialJob, message: str) -> dict[str, str]:
    return {"state": "fail", "error": message}


def _counted(study) -> int:
    """The trials that count towards ``tune.trials``: completed or pruned."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _resumed(cfg: RunConfig, spec: TuneSpec) -> int:
    """Requeue the settings of trials a kill left running (each resumes its run's checkpoint);
    return how many trials already count."""
    from optuna.trial import TrialState

    study = study_for(cfg, spec)
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(stale._trial_id, TrialState.FAIL)
        study.enqueue_trial(stale.params, skip_if_exists=True)
    return _counted(study)


def tune_algorithm(cfg: RunConfig, spec: TuneSpec, progress: bool = True):
    """Run (or finish) ``spec.trials`` trials for one algorithm in this process, all drawn by one
    sampler (so a tune on one worker draws what it always drew); return its study."""
    first = _resumed(cfg, spec)
    study = study_for(cfg, spec)
    for index in range(first, spec.trials):
        one_trial(TrialJob(cfg, spec, index), progress, study)
    return _finished_study(cfg, spec)


def _tune_in_parallel(configs: list[RunConfig], spec: TuneSpec, workers: int, executor: str,
                      address: str | None, progress: bool) -> list:
    """Every algorithm's missing trials over ``workers`` processes or Ray tasks, sharing each study
    through its storage; the algorithms take turns (:func:`metacompare.workflows.executors.interleave`)."""
    executors.check_placement(workers, 1, executor)
    jobs = executors.interleave([TrialJob(cfg, spec, index) for cfg in configs
                                 for index in range(_resumed(cfg, spec), spec.trials)], key=lambda job: job.cfg.algorithm)
    with tqdm(total=len(jobs), desc="tune", unit="trial", disable=not progress, dynamic_ncols=True) as bar:
        for job, outcome in executors.outcomes(jobs, run_trial, _lost_trial, workers, executor, address):
            if outcome["state"] == "fail":
                raise UserError(f"tune: a trial of {job.cfg.algorithm} failed ({outcome['error']}); "
                                f"rerun to go on: finished trials are kept")
            bar.update(1)
    return [_finished_study(cfg, spec) for cfg in configs]


def _finished_study(cfg: RunConfig, spec: TuneSpec):
    """The algorithm's study, checked: ``spec.trials`` trials counted, at least one completed."""
    from optuna.trial import TrialState

    study = study_for(cfg, spec)
    if (counted := _counted(study)) < spec.trials:
        raise UserError(f"tune: {cfg.algorithm} has {counted} of {spec.trials} trials; rerun to finish them")
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise UserError(f"tune: every trial of {cfg.algorithm} was pruned; raise tune.trials")
    return study


def tuning_curve(study, algorithm: str, higher_is_better: bool) -> list[dict[str, Any]]:
    """Best validation score after each trial (completed trials only count towards the best)."""
    from optuna.trial import TrialState

    rows, best = [], math.nan
    for trial in sorted(study.trials, key=lambda t: t.number):
        if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        value = trial.value if trial.state == TrialState.COMPLETE else \
            (list(trial.intermediate_values.values()) or [math.nan])[-1]
        if trial.state == TrialState.COMPLETE and math.isfinite(value) and \
                (math.isnan(best) or (value > best if higher_is_better else value < best)):
            best = value
        rows.append({"algorithm": algorithm, "trial": len(rows) + 1, "state": trial.state.name.lower(),
                     "value": value, "best_so_far": best, **{f"param_{k}": v for k, v in trial.params.items()}})
    return rows


# ------------------------------------------------------------------------------------- the whole job
def tune(configs: list[RunConfig], spec: TuneSpec, progress: bool = True, workers: int = 1,
         executor: str = "local", address: str | None = None) -> dict[str, dict[str, Any]]:
    """Tune every algorithm with the same number of trials, one after another in this process or
    over ``workers`` processes (or Ray tasks) at once; write the search record; return the chosen
    setting of each algorithm."""
    with executors.experiment_lock(tune_dir(configs[0])):  # two tunes of one study would overshoot its trials
        if executor == "local" and workers == 1:
            studies = [tune_algorithm(cfg, spec, progress) for cfg in configs]
        else:
            studies = _tune_in_parallel(configs, spec, workers, executor, address, progress)
    chosen, curve = {}, []
    for cfg, study in zip(configs, studies):
        chosen[cfg.algorithm] = dict(study.best_trial.params)
        curve += tuning_curve(study, cfg.algorithm, classifies(cfg))
    write_record(configs, spec, chosen, curve)
    return chosen


def write_record(configs: list[RunConfig], spec: TuneSpec, chosen: dict, curve: list[dict]) -> None:
    """``tune/search.yaml`` (space, trials, budget, chosen settings) and ``tune/tuning_curve.csv``."""
    folder = tune_dir(configs[0])
    record = {"trials_per_algorithm": spec.trials, "sampler": f"optuna TPESampler(seed={spec.seed})",
              "pruner": "optuna MedianPruner on the validation score at each evaluation",
              "trial_budget": spec.trial_budget or "each config's iterations / 4",
              "evaluations_per_trial": spec.evaluations, "scored_on": "validation episodes only",
              "space": {c.algorithm: spec.space_for(c.algorithm) for c in configs}, "chosen": chosen}
    results.atomic_write(folder / "search.yaml", yaml.safe_dump(_plain(record), sort_keys=False))
    columns = list(dict.fromkeys(k for row in curve for k in row))
    results.write_csv(folder / "tuning_curve.csv", curve, columns)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if hasattr(value, "item") else value


def final_configs(configs: list[RunConfig], chosen: dict[str, dict], seeds: int,
                  bound: dict[str, float] | None = None, evaluations: int = 0) -> list[RunConfig]:
    """Each algorithm's chosen setting with ``seeds`` training seeds, under ``bound`` when given."""
    out = []
    for cfg in configs:
        changes: dict[str, Any] = dict(chosen.get(cfg.algorithm, {}))
        if bound:
            changes.update(iterations=UNCAPPED, budget={**{k: bound.get(k) for k in BUDGET_KINDS},
                                                        "evaluations": evaluations})
        out += [with_overrides(cfg, **changes, seed=cfg.seed + s) for s in range(seeds)]
    provenance.check_same_episodes(out)  # settings from a tune or a --chosen file included, before training
    return out


def run_tune(path: str | Path, overrides: Sequence[str] = (), seeds: int | None = None,
             results_dir: str | None = None, progress: bool = True, workers: int = 1,
             executor: str = "local", address: str | None = None) -> list[dict[str, Any]]:
    """``metacompare tune FILE``: tune, then train and test each chosen setting with several seeds,
    on ``workers`` local processes or Ray tasks (:mod:`metacompare.workflows.executors`)."""
    configs, spec = load(path, overrides)
    if results_dir:
        configs = [with_overrides(c, results_dir=results_dir) for c in configs]
    with results.experiment_lock(Path(configs[0].results_dir) / configs[0].experiment, "tune"):
        chosen = tune(configs, spec, progress, workers, executor, address)
        return executors.train_runs(final_configs(configs, chosen, seeds or spec.seeds), train_and_evaluate,
                                    workers, executor, address, progress=progress)
