"""Checks on a :class:`~metacompare.config.runconfig.RunConfig` that need more than a type: ranges, choices,
and what the chosen algorithm and backend can run (read from the algorithm registry).

Every check raises :class:`~metacompare.errors.ConfigError` naming the field and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import typing
import warnings
from pathlib import Path

import torch

from metacompare.engines import torch_compile as compiled

from metacompare import models, paths
from metacompare.algorithms import ALGORITHMS, BACKENDS
from metacompare.data import SOURCES, source_of
from metacompare.errors import ConfigError, UserError
from metacompare.config.runconfig import BUDGET_AT_MOST, RunConfig, _plain
from metacompare.storage.tracking import TRACKERS

CHOICES: dict[str, typing.Collection[str]] = {
    "backend": BACKENDS,
    "dataset": SOURCES.keys(),  # a live view: a source registered later is a choice too
    "model": ("mlp", "conv4", "conv4_strided", "conv4_finn", "conv4_nichol", "metamodel", "bag_of_embeddings", "resnet12"),
    "inner_optimizer": ("sgd", "adam"),
    "outer_optimizer": ("adam", "sgd"),
    "precision": ("float32", "float64", "bfloat16"),
    "memory_format": ("contiguous", "channels_last"),
    "evaluation": ("transductive", "non_transductive"),
    "inner_state": ("reset", "carry"),
    "inner_loss": ("mean", "sum", "sum_over_shots"),
    "test_checkpoint": ("last", "best"),
    "outer_lr_schedule": ("linear", "cosine"),
    "tracker": tuple(TRACKERS),
}
NON_NEGATIVE = ("query", "train_shots", "test_query", "inner_batch_size", "eval_inner_batch_size", "eval_batch",
                "floor_episodes", "budget_rungs", "task_chunk")  # task_chunk 0: the whole meta-batch
POSITIVE = ("ways", "shots", "inner_steps", "meta_batch_size", "iterations", "eval_interval", "fit_interval",
            "eval_episodes", "test_episodes", "eval_inner_steps", "checkpoint_interval", "filters", "inner_chains")
POSITIVE_FLOAT = ("inner_lr", "outer_lr")
# Upper bounds where a larger value would exhaust memory (episodes are drawn up front; sizes and widths
# set the activations) or overflow a counter, checked before anything is built.
AT_MOST = {"ways": 1000, "shots": 1000, "query": 1000, "meta_batch_size": 10_000, "inner_steps": 100_000,
           "eval_inner_steps": 100_000, "eval_episodes": 100_000, "test_episodes": 100_000, "filters": 4096,
           "task_chunk": 10_000, "num_tasks": 10**8, "iterations": 10**9, "eval_interval": 10**9, "fit_interval": 10**9,
           "checkpoint_interval": 10**9, "train_shots": 1000, "test_query": 1000, "inner_batch_size": 10**6,
           "eval_inner_batch_size": 10**6, "eval_batch": 100_000,
           "floor_episodes": 100_000, "budget_rungs": 16}
EXAMPLES_PER_BATCH = 10**6  # ways * (shots + query) * meta_batch_size, the examples one meta-batch holds
# Fields that only some algorithms read; each algorithm class lists the ones it reads in ``uses``, and a
# non-default value for an algorithm that would ignore it is refused rather than recorded as used.
# batch_tasks: the algorithms with a task-batched form (others would loop); task_chunk: those that chunk it.
OPTIONAL_FIELDS = ("inner_state", "inner_chains", "mamlpp", "batch_tasks", "task_chunk", "vmap")
NO_BATCHNORM2D = ("mlp", "metamodel", "conv4_finn", "bag_of_embeddings")  # conv4_finn: offset-only layers
NO_CONV = ("mlp", "metamodel", "bag_of_embeddings")
# Fields read only under another setting, whatever the algorithm: the setting as a refusal names it,
# and the test. With _check_used's ``uses``, the one declaration of who reads what.
READ_ONLY_WITH: dict[str, tuple[str, typing.Callable[[RunConfig], bool]]] = {
    "task_chunk": ("batch_tasks: true", lambda cfg: cfg.batch_tasks),
    "inner_betas": ("inner_optimizer: adam", lambda cfg: cfg.inner_optimizer == "adam"),
    "memory_format": ("a conv model (conv4, conv4_strided, conv4_finn, conv4_nichol, resnet12)",
                      lambda cfg: cfg.model not in NO_CONV),
    "filters": ("a conv4 model (conv4, conv4_strided, conv4_finn, conv4_nichol; resnet12 has resnet12.widths)",
                lambda cfg: cfg.model.startswith("conv4")),
}


def _suggest(name: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def validate(cfg: RunConfig) -> RunConfig:
    """Range and choice checks that need more than a type; returns ``cfg`` unchanged."""
    _check_choices(cfg)
    _check_algorithm(cfg)
    _check_bounds(cfg)
    _validate_protocol(cfg)
    _check_used(cfg)
    _check_mamlpp(cfg)
    _check_numbers(cfg)
    _check_dataset(cfg)
    _check_place(cfg)
    _check_paths(cfg)
    compiled.check(cfg, sorted(name for name, c in ALGORITHMS.items() if c.compilable))
    if cfg.precision == "bfloat16" and cfg.algorithm in ("maml", "maml++") and cfg.inner_steps > 1:
        # allowed, but measured by `bench`: bf16 error compounds through the second-order pass
        warnings.warn(f"precision: bfloat16 with maml and inner_steps={cfg.inner_steps}: at 5 steps its "
                      f"meta-gradient differed from float32 by up to 84% of the largest entry (docs/performance.md, "
                      f"five inner steps); use float32 for multi-step MAML", stacklevel=2)
    return cfg


def _check_algorithm(cfg: RunConfig) -> None:
    """A registered algorithm on a backend it declares it can run on (a known backend: :data:`CHOICES`)."""
    if cfg.algorithm not in ALGORITHMS:
        raise ConfigError(f"algorithm: unknown '{cfg.algorithm}'{_suggest(cfg.algorithm, ALGORITHMS)}; "
                          f"choose one of {', '.join(sorted(ALGORITHMS))}")
    supported = ALGORITHMS[cfg.algorithm].backends
    if cfg.backend not in supported:
        raise ConfigError(f"backend: {cfg.algorithm} cannot run on '{cfg.backend}'; "
                          f"set backend to one of {', '.join(supported)}")


def _check_choices(cfg: RunConfig) -> None:
    for name, options in CHOICES.items():
        value = getattr(cfg, name)
        if value not in options:
            raise ConfigError(f"{name}: unknown '{value}'{_suggest(value, options)}; "
                              f"choose one of {', '.join(options)}")
    for names, least, what in ((POSITIVE, 1, "a positive whole number"),
                               (NON_NEGATIVE, 0, "0 or a positive whole number")):
        for name in names:
            if getattr(cfg, name) < least:
                raise ConfigError(f"{name}: must be {what}, got {getattr(cfg, name)}")


def _check_numbers(cfg: RunConfig) -> None:
    if any(steps <= 0 for steps in cfg.test_inner_steps):
        raise ConfigError(f"test_inner_steps: each entry must be a positive number of steps, got {list(cfg.test_inner_steps)}")
    for name in POSITIVE_FLOAT:
        value = getattr(cfg, name)
        if not value > 0 or value == float("inf"):
            raise ConfigError(f"{name}: must be a positive finite number, got {value}")
    for engine in ("batch_tasks", "vmap"):
        if getattr(cfg, engine) and cfg.backend != "metacompare":
            raise ConfigError(f"{engine}: task batching runs on the metacompare backend only; set backend: "
                              f"metacompare or {engine}: false (got backend '{cfg.backend}')")
    if cfg.batch_tasks and cfg.vmap:
        raise ConfigError("vmap: the vmap engine and the grouped network (batch_tasks) are two ways to batch "
                          "the tasks; set one of them to false")
    if cfg.vmap and cfg.inner_state == "carry":
        raise ConfigError("vmap: a carried inner state threads every task through the one before, so the tasks "
                          "cannot be mapped at once; set inner_state: reset or vmap: false")
    if cfg.num_tasks == 0 or cfg.num_tasks < -1:
        raise ConfigError(f"num_tasks: must be a positive number of distinct training tasks, or -1 for "
                          f"unlimited; got {cfg.num_tasks}")


def _check_dataset(cfg: RunConfig) -> None:
    """The model fits the dataset, and the dataset's own section is usable (its source's checks)."""
    source_of(cfg).check(cfg)
    _check_user_data(cfg)
    if not cfg.omniglot.sources:
        raise ConfigError("omniglot.sources: the list is empty; name at least one, e.g. [images_background]")
    _check_resnet12(cfg)
    _check_input(cfg)


def _check_input(cfg: RunConfig) -> None:
    """The network takes the data's images, by the one rule of :func:`metacompare.models.refusal`, for
    every shape the source's images may have. A folder whose channels are detected is refused here only
    if neither grey nor colour images would fit; otherwise its images decide when the network is built
    (:func:`metacompare.models.build_model`)."""
    source = source_of(cfg)
    if not source.images:
        return  # these networks are sized to the data's width
    reasons = [models.refusal(cfg, shape) for shape in source.possible_shapes(cfg)]
    reason = reasons[0] if all(reasons) else None
    if any(reasons) and not all(reasons):  # grey or colour decides: read a few images' headers
        try:
            reason = models.refusal(cfg, models.input_shape(cfg))
        except UserError:
            reason = None  # the run itself reports the data's problem
    if reason:
        raise ConfigError(reason)


def _check_resnet12(cfg: RunConfig) -> None:
    """The ``resnet12`` section: four positive widths, a DropBlock rate in [0, 1), read only by that model."""
    r = cfg.resnet12
    if r != type(r)() and cfg.model != "resnet12":
        fix = " or set model: resnet12" if "resnet12" in source_of(cfg).networks else ""
        raise ConfigError(f"resnet12: only model: resnet12 reads this section, and model is '{cfg.model}'; "
                          f"remove it{fix}")
    if len(r.widths) != 4 or not all(0 < w <= AT_MOST["filters"] for w in r.widths):
        raise ConfigError(f"resnet12.widths: expected the 4 blocks' channels, each 1 to {AT_MOST['filters']}, got "
                          f"{list(r.widths)}; e.g. [64, 160, 320, 640] or [64, 128, 256, 512]")
    if not 0 <= r.dropblock_rate < 1:
        raise ConfigError(f"resnet12.dropblock_rate: must be in [0, 1) (0: no DropBlock), got {r.dropblock_rate}")
    if not 1 <= r.dropblock_size <= 512:
        raise ConfigError(f"resnet12.dropblock_size: must be 1 to 512 pixels, got {r.dropblock_size}")


def _check_user_data(cfg: RunConfig) -> None:
    """The ``user_data`` section (metacompare.data.user): sane fractions and sizes (its source checks the root)."""
    ud = cfg.user_data
    if not (0 < ud.test_fraction < 1 and 0 <= ud.validation_fraction < 1 and ud.test_fraction + ud.validation_fraction < 1):
        raise ConfigError(f"user_data.test_fraction, validation_fraction: need 0 < test < 1, 0 <= validation < 1 and "
                          f"their sum below 1, got {ud.test_fraction} and {ud.validation_fraction}")
    if ud.image_size != 0 and not 8 <= ud.image_size <= 512:
        raise ConfigError(f"user_data.image_size: 0 (detect) or 8 to 512 pixels, got {ud.image_size}")
    if ud.channels not in (0, 1, 3):
        raise ConfigError(f"user_data.channels: 0 (detect), 1 (grey) or 3 (colour), got {ud.channels}")
    if not 0 <= ud.cache_mb < float("inf"):
        raise ConfigError(f"user_data.cache_mb: a size in megabytes >= 0, got {ud.cache_mb}")
    for name, low, high in (("vocab_buckets", 2, 2**24), ("max_tokens", 1, 4096), ("embedding_dim", 1, 4096)):
        if not low <= getattr(ud, name) <= high:
            raise ConfigError(f"user_data.{name}: must be from {low} to {high}, got {getattr(ud, name)}")
    if not 0 <= ud.split_seed < 2**32:
        raise ConfigError(f"user_data.split_seed: a whole number from 0 to 2**32 - 1, got {ud.split_seed}")


def _check_place(cfg: RunConfig) -> None:
    """Seeds, the device (a GPU must be visible) and the experiment's folder name."""
    for name in ("seed", "eval_seed"):
        if not 0 <= getattr(cfg, name) < 2**32:
            raise ConfigError(f"{name}: must be a whole number from 0 to 2**32 - 1, got {getattr(cfg, name)}")
    if cfg.device != "cpu" and not cfg.device.startswith("cuda"):
        raise ConfigError(f"device: unknown '{cfg.device}'; use cpu, cuda or cuda:N")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: '{cfg.device}' asked for but no CUDA GPU is visible; set device: cpu")
    if not cfg.experiment or "/" in cfg.experiment or cfg.experiment in (".", ".."):
        raise ConfigError(f"experiment: must be a non-empty name without '/', got '{cfg.experiment}'")


def _check_paths(cfg: RunConfig) -> None:
    """The folders a run writes and the data it reads, against the system's limits on names and paths
    and for dangling symbolic links (:mod:`metacompare.paths`): one line now, not a traceback later."""
    if len(os.fsencode(cfg.experiment)) > paths.NAME_MAX:
        raise ConfigError(f"experiment: '{cfg.experiment[:40]}...' is {len(os.fsencode(cfg.experiment)):,} bytes "
                          f"long, over the {paths.NAME_MAX} a folder name may have; choose a shorter name")
    run_folder = Path(cfg.results_dir) / cfg.experiment / cfg.run_id()
    reason = paths.folder_problem(cfg.results_dir) or paths.dangling(run_folder) or \
        paths.too_long(run_folder / ("x" * 64))  # room for a temporary file's name
    if reason:
        raise ConfigError(f"results_dir: {paths.shown(cfg.results_dir)}: {reason}; choose another folder with "
                          f"--results-dir (or a shorter experiment name)")
    for name, value in (("data_root", cfg.data_root), ("user_data.root", cfg.user_data.root)):
        reason = paths.too_long(value) if value else None
        if reason:
            raise ConfigError(f"{name}: {reason}; give a shorter path (e.g. through a symbolic link)")


def _validate_protocol(cfg: RunConfig) -> None:
    """The protocol knobs: ranges, and combinations an algorithm or backend cannot run."""
    if cfg.query == 0 and ALGORITHMS[cfg.algorithm].needs_query:
        raise ConfigError(f"query: must be a positive whole number for {cfg.algorithm}, which scores its adapted "
                          f"weights on query examples; got {cfg.query}")
    if cfg.evaluation_query <= 0:
        raise ConfigError("test_query: evaluation episodes need query examples; set test_query >= 1")
    if len(cfg.inner_betas) != 2 or not all(0 <= b < 1 for b in cfg.inner_betas):
        raise ConfigError(f"inner_betas: expected two numbers in [0, 1), got {list(cfg.inner_betas)}")
    if cfg.outer_lr_final is not None and not 0 <= cfg.outer_lr_final < float("inf"):
        raise ConfigError(f"outer_lr_final: must be a finite number >= 0, got {cfg.outer_lr_final}")
    if cfg.inner_state == "carry" and cfg.inner_optimizer == "sgd":
        raise ConfigError("inner_state: carry keeps an inner optimiser's state across tasks, and plain SGD "
                          "has none; set inner_optimizer: adam or inner_state: reset")
    _check_chains(cfg)
    plain = (cfg.inner_optimizer == "sgd" and cfg.inner_batch_size == 0 and cfg.inner_loss == "mean")
    if cfg.backend != "metacompare" and not plain:
        raise ConfigError(f"backend: {cfg.backend} runs full-batch SGD on a mean loss only; set backend: "
                          f"metacompare for inner_optimizer/inner_batch_size/inner_loss")
    _check_common_evaluation(cfg)
    _check_budget(cfg)
    _check_omniglot(cfg)


def _check_chains(cfg: RunConfig) -> None:
    """``inner_chains``: independent carried chains, each over a share of the meta-batch."""
    if cfg.inner_chains == 1:
        return
    if cfg.inner_state != "carry":
        carry = ("set inner_state: carry or inner_chains: 1" if cfg.inner_optimizer == "adam" else
                 "set inner_chains: 1 (carried chains need inner_optimizer adam and inner_state carry)")
        raise ConfigError(f"inner_chains: {cfg.inner_chains} chains of a carried inner state, but inner_state is "
                          f"'{cfg.inner_state}' (every task starts afresh); {carry}")
    if cfg.inner_chains > cfg.meta_batch_size:
        raise ConfigError(f"inner_chains: {cfg.inner_chains} chains cannot share meta_batch_size: "
                          f"{cfg.meta_batch_size} tasks; use at most {cfg.meta_batch_size}")


def _check_common_evaluation(cfg: RunConfig) -> None:
    procedure = cfg.common_evaluation
    if procedure is not None:
        if procedure.optimizer not in CHOICES["inner_optimizer"]:
            raise ConfigError(f"common_evaluation.optimizer: choose one of {', '.join(CHOICES['inner_optimizer'])}, "
                              f"got '{procedure.optimizer}'")
        if not 0 < procedure.lr < float("inf") or procedure.steps <= 0 or procedure.batch_size < 0:
            raise ConfigError("common_evaluation: lr must be a positive number, steps a positive whole "
                              "number and batch_size >= 0")


def _check_mamlpp(cfg: RunConfig) -> None:
    """MAML++'s options (runconfig.MamlPlusPlusConfig): ranges, and what each engine and backend can run.
    An algorithm that does not read them is refused by :func:`_check_used`, from its ``uses``."""
    algorithm = ALGORITHMS[cfg.algorithm]
    options = cfg.mamlpp if cfg.mamlpp is not None else algorithm.mamlpp_preset
    if options is None:
        return
    if not 0 < options.msl_fraction <= 1:
        raise ConfigError(f"mamlpp.msl_fraction: must be in (0, 1], the fraction of training over which the "
                          f"multi-step loss weights anneal (paper: 0.1), got {options.msl_fraction}")
    if not 0 <= options.first_order_fraction <= 1:
        raise ConfigError(f"mamlpp.first_order_fraction: must be in [0, 1], the fraction of training run first "
                          f"order (paper: 0.5; 0: never), got {options.first_order_fraction}")
    if options.first_order_fraction > 0 and algorithm.first_order:
        raise ConfigError(f"mamlpp.first_order_fraction: {cfg.algorithm} is first order throughout; set it to 0, "
                          f"or use algorithm maml for derivative-order annealing")
    graph = [name for name in ("multi_step_loss", "per_step_bn_weights", "per_step_bn_statistics", "learned_inner_lr")
             if getattr(options, name)]
    if graph and cfg.backend != "metacompare":
        raise ConfigError(f"mamlpp.{graph[0]}: runs in metacompare's own inner loop only; set backend: metacompare "
                          f"(learn2learn and higher take plain SGD steps; only first_order_fraction works there)")
    if (graph or options.first_order_fraction > 0) and cfg.compile:
        raise ConfigError(f"mamlpp.{(graph or ['first_order_fraction'])[0]}: compile: true has no MAML++ form; "
                          f"set compile: false")
    if graph and cfg.vmap:
        raise ConfigError(f"mamlpp.{graph[0]}: MAML++'s per-step tensors are not vmapped; set vmap: false")
    norms = [name for name in ("per_step_bn_weights", "per_step_bn_statistics") if getattr(options, name)]
    if norms and cfg.mamlpp is not None and cfg.model in NO_BATCHNORM2D:
        raise ConfigError(f"mamlpp.{norms[0]}: model {cfg.model} has no BatchNorm2d layer to give per-step tensors; "
                          f"set it to false or use model conv4, conv4_strided or conv4_nichol")
    if options.learned_inner_lr and cfg.inner_optimizer != "sgd":
        raise ConfigError(f"mamlpp.learned_inner_lr: learns SGD step sizes; set inner_optimizer: sgd (got "
                          f"'{cfg.inner_optimizer}')")


def _check_budget(cfg: RunConfig) -> None:
    for name in ("seconds", "cpu_seconds", "work"):
        value = getattr(cfg.budget, name)
        if value is not None and not 0 < value <= BUDGET_AT_MOST[name]:
            raise ConfigError(f"budget.{name}: must be a positive number up to {BUDGET_AT_MOST[name]:g} or null, "
                              f"got {value}")
    if cfg.budget.cpu_seconds is not None and cfg.device != "cpu":
        raise ConfigError(f"budget.cpu_seconds: CPU time does not count work on device {cfg.device}; "
                          f"use budget.seconds (wall clock) there")
    if cfg.budget.evaluations < 0:
        raise ConfigError(f"budget.evaluations: must be 0 (every eval_interval) or a positive count, got "
                          f"{cfg.budget.evaluations}")


def _check_omniglot(cfg: RunConfig) -> None:
    oc = cfg.omniglot
    if oc.split not in ("alphabets", "characters"):
        raise ConfigError(f"omniglot.split: choose alphabets or characters, got '{oc.split}'")
    if oc.rotation not in ("classes", "per_task"):
        raise ConfigError(f"omniglot.rotation: choose classes or per_task, got '{oc.rotation}'")
    unknown = set(oc.rotated_splits) - {"train", "validation", "test"}
    if unknown:
        raise ConfigError(f"omniglot.rotated_splits: unknown split(s) {sorted(unknown)}; use train, validation, test")
    if oc.train_characters <= 0 or oc.validation_characters < 0:
        raise ConfigError("omniglot.train_characters must be positive and omniglot.validation_characters >= 0")


def _check_bounds(cfg: RunConfig) -> None:
    for name, limit in AT_MOST.items():
        if getattr(cfg, name) > limit:
            raise ConfigError(f"{name}: at most {limit:,} (more would exhaust memory), got {getattr(cfg, name):,}")
    if max(cfg.test_inner_steps, default=0) > AT_MOST["eval_inner_steps"]:
        raise ConfigError(f"test_inner_steps: each at most {AT_MOST['eval_inner_steps']:,}, got {list(cfg.test_inner_steps)}")
    if not 8 <= cfg.omniglot.image_size <= 512:
        raise ConfigError(f"omniglot.image_size: must be 8 to 512 pixels, got {cfg.omniglot.image_size}")
    examples = cfg.ways * (max(cfg.shots, cfg.training_shots) + max(cfg.query, cfg.evaluation_query)) * cfg.meta_batch_size
    if examples > EXAMPLES_PER_BATCH:
        raise ConfigError(f"meta_batch_size: ways * (shots + query) * meta_batch_size = {examples:,} examples per "
                          f"meta-batch, more than {EXAMPLES_PER_BATCH:,} fit in memory; lower one of them")


def _check_used(cfg: RunConfig) -> None:
    """Refuse a setting the run would silently ignore, from the declarations alone: an optional field the
    algorithm's class does not list in ``uses``, a field of :data:`READ_ONLY_WITH` without the setting it
    needs, or a field the algorithm ``requires`` at another value."""
    algorithm, defaults = ALGORITHMS[cfg.algorithm], RunConfig()
    for name in (*OPTIONAL_FIELDS, *READ_ONLY_WITH):
        value, default = getattr(cfg, name), getattr(defaults, name)
        if value == default:
            continue
        if name in OPTIONAL_FIELDS and name not in algorithm.uses:
            users = sorted(n for n, c in ALGORITHMS.items() if name in c.uses)
            raise ConfigError(f"{name}: {cfg.algorithm} ignores it, so {as_yaml(value)} would be recorded but not "
                              f"used (only {', '.join(users) or 'no algorithm'} reads it); set {name}: "
                              f"{as_yaml(default)}, or set it for those algorithms under per_algorithm:")
        if name in READ_ONLY_WITH and not READ_ONLY_WITH[name][1](cfg):
            raise ConfigError(f"{name}: read only with {READ_ONLY_WITH[name][0]}, so {as_yaml(value)} would be "
                              f"recorded but not used; set {name}: {as_yaml(default)}")
    for name, wanted in algorithm.requires.items():
        if getattr(cfg, name) != wanted:
            raise ConfigError(f"{name}: {cfg.algorithm} {algorithm.requires_why}; set {name}: {as_yaml(wanted)} "
                              f"(got {getattr(cfg, name)!r})")


def as_yaml(value: typing.Any) -> str:
    """``value`` as a config file (and ``--set``) would write it: null, true, [0.9, 0.999]."""
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    return value if isinstance(value, str) else json.dumps(_plain(value))
