"""Typed, validated run configuration.

A YAML file becomes one or more :class:`RunConfig` objects; nothing downstream sees raw dicts.
Unknown keys, wrong types and out-of-range values raise :class:`ConfigError`, whose message names the
field and the fix (the CLI prints it on one line and exits with status 2).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from metacompare import files
from metacompare.errors import UserError
from metacompare.tracking import TRACKERS


class ConfigError(UserError, ValueError):
    """A bad configuration value; the message names the field and how to fix it."""


@dataclass(frozen=True)
class OmniglotConfig:
    """Where Omniglot comes from and how its alphabets are split.

    Alphabet selectors are names (``Greek``) or ``source/Alphabet`` (``images_background/Greek``);
    ``source/*`` selects every alphabet of a source. ``train_alphabets: null`` means every alphabet
    not in validation or test, so the three splits are alphabet-disjoint by construction.
    """

    sources: tuple[str, ...] = ("images_background", "images_evaluation")
    rotations: bool = True
    image_size: int = 28
    train_alphabets: tuple[str, ...] | None = None
    validation_alphabets: tuple[str, ...] = ()
    test_alphabets: tuple[str, ...] = ("images_evaluation/*",)
    download: bool = True
    # split: "alphabets" (the lists above) or "characters": every character of the sources shuffled
    # with split_seed, the first train_characters train, the next validation_characters validate, the
    # rest test (Nichol et al.: seed 0, 1200 / 0 / 423; Finn et al.: seed 1, 1100 / 100 / 423).
    split: str = "alphabets"
    split_seed: int = 0
    train_characters: int = 1200
    validation_characters: int = 0
    # rotation: "classes" (each 90/180/270-degree turn of a character is a class of its own) or
    # "per_task" (each task turns each class by a random multiple of 90 degrees, Finn et al.);
    # rotated_splits: which splits get rotations (Nichol et al.: train only).
    rotation: str = "classes"
    rotated_splits: tuple[str, ...] = ("train", "validation", "test")


@dataclass(frozen=True)
class MiniImagenetConfig:
    """mini-ImageNet comes as learn2learn's pickles ``mini-imagenet-cache-{train,validation,test}.pkl``
    in ``data_root``; ``download: true`` lets learn2learn fetch them (about 3 GB)."""

    download: bool = False


@dataclass(frozen=True)
class DigitsConfig:
    """Which digits meta-train, validate and meta-test on ``mnist`` and ``digits`` (metacompare.digits).

    ``validation_classes: []`` draws the validation episodes from the training digits (from
    ``eval_seed``, a stream apart from training's ``seed``): ten classes leave no room for a third
    disjoint split of 5-way tasks. ``download`` lets ``mnist`` fetch its files into ``data_root``.
    """

    train_classes: tuple[int, ...] = (0, 1, 2, 3, 4)
    validation_classes: tuple[int, ...] = ()
    test_classes: tuple[int, ...] = (5, 6, 7, 8, 9)
    download: bool = True


@dataclass(frozen=True)
class EvalProcedure:
    """A test-time adaptation procedure shared by every algorithm of a comparison (``common_evaluation``)."""

    optimizer: str = "sgd"
    lr: float = 0.01
    steps: int = 10
    batch_size: int = 0
    betas: tuple[float, ...] = (0.9, 0.999)


@dataclass(frozen=True)
class BudgetConfig:
    """Bounds on training besides ``iterations`` (:mod:`metacompare.budget`): training seconds (validation
    excluded) on the wall clock or in this process's CPU time, or work in example-passes; ``evaluations``:
    validate at that many equally spaced fractions of the budget instead of every ``eval_interval``
    iterations (0)."""

    seconds: float | None = None
    cpu_seconds: float | None = None
    work: float | None = None
    evaluations: int = 0


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs; every field can be set with ``--set name=value``."""

    experiment: str = "default"
    algorithm: str = "maml"
    backend: str = "metacompare"
    dataset: str = "sine"
    data_root: str = "data"
    model: str = "mlp"
    ways: int = 1
    shots: int = 10
    query: int = 10
    num_tasks: int = -1
    inner_lr: float = 0.01
    inner_steps: int = 1
    inner_optimizer: str = "sgd"
    # Protocol knobs (Nichol et al. 2018's supervised-reptile, Finn et al. 2017's cbfinn/maml):
    train_shots: int = 0  # examples per class a training task adapts on; 0: shots
    test_query: int = 0  # query examples per class in validation/test episodes; 0: query
    inner_batch_size: int = 0  # mini-batches of this size, one pass after another; 0: full batch
    eval_inner_batch_size: int = 0  # the same at test time (Reptile's eval-batch)
    inner_betas: tuple[float, ...] = (0.9, 0.999)  # inner Adam's betas (supervised-reptile: beta1 = 0)
    inner_state: str = "reset"  # inner optimiser state per task ("reset") or carried across tasks
    inner_loss: str = "mean"  # inner loss: mean, sum, or sum_over_shots (Finn's sum / K)
    outer_lr: float = 0.001
    outer_optimizer: str = "adam"
    outer_lr_final: float | None = None  # anneal the outer step linearly to this (Reptile: 0)
    meta_batch_size: int = 25
    iterations: int = 1000
    eval_interval: int = 100
    eval_episodes: int = 100
    test_episodes: int = 600
    eval_inner_steps: int = 10
    seed: int = 0
    eval_seed: int = 2018
    test_checkpoint: str = "last"  # test the last iterate or the best-validation checkpoint ("best")
    common_evaluation: EvalProcedure | None = None  # also score every algorithm with this procedure
    # extra test evaluations after each of these numbers of adaptation steps (Finn et al. 2017, Fig. 3)
    test_inner_steps: tuple[int, ...] = ()
    device: str = "cpu"
    precision: str = "float32"
    checkpoint_interval: int = 100
    results_dir: str = "results"
    omniglot: OmniglotConfig = field(default_factory=OmniglotConfig)
    # transductive: the query set is predicted as one batch, so BatchNorm uses its statistics (the MAML
    # and Reptile code); non_transductive: each query example is predicted alone with the support set.
    evaluation: str = "transductive"
    filters: int = 64  # conv4 channels: 64 for Omniglot, 32 for mini-ImageNet (Finn et al. 2017)
    miniimagenet: MiniImagenetConfig = field(default_factory=MiniImagenetConfig)
    digits: DigitsConfig = field(default_factory=DigitsConfig)
    # Fast paths (metacompare.grouped and metacompare.precision; `python -m metacompare bench` measures them): one grouped
    # network for the whole meta-batch, `task_chunk` tasks at a time (0: all); NHWC conv layout.
    # precision: bfloat16 meta-trains under autocast with float32 weights; evaluation stays float32.
    batch_tasks: bool = False
    task_chunk: int = 0
    memory_format: str = "contiguous"
    # Experiment tracking (metacompare.tracking): where a run is logged, not what it computes.
    tracker: str = "tensorboard"
    tracking_uri: str = ""  # MLflow server or store; empty: <results_dir>/mlruns
    budget: BudgetConfig = field(default_factory=BudgetConfig)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def identity(self) -> dict[str, Any]:
        """The fields that define a run (all but :data:`NOT_IN_RUN_ID`): what ``run_id`` hashes and
        what a checkpoint must share to be resumed."""
        return identity_of(self.to_dict())

    def run_id(self) -> str:
        """Stable name for this exact configuration, so a rerun finds (and skips) a finished run."""
        digest = hashlib.sha1(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.algorithm}-{digest}"

    @property
    def is_classification(self) -> bool:
        return self.dataset != "sine"

    @property
    def training_shots(self) -> int:
        return self.train_shots or self.shots

    @property
    def evaluation_query(self) -> int:
        return self.test_query or self.query


# Where files and logs go and which device computes: a moved folder, another GPU or another tracker is
# the same run (the numbers are pinned by one torch thread per run, see runner.pin_threads).
NOT_IN_RUN_ID = ("results_dir", "experiment", "device", "data_root", "tracker", "tracking_uri")


def identity_of(values: dict[str, Any]) -> dict[str, Any]:
    """A config dict's identifying fields; an unset budget or digits section is left out, so runs
    without one keep the identity (run id, resumable checkpoints) they had before those existed."""
    body = {k: v for k, v in values.items() if k not in NOT_IN_RUN_ID}
    # Sections added after results were recorded leave run ids alone while at their defaults.
    for name, default in (("budget", BudgetConfig), ("digits", DigitsConfig)):
        if body.get(name) == _plain(dataclasses.asdict(default())):
            body.pop(name)
    return body

CHOICES: dict[str, tuple[str, ...]] = {
    "dataset": ("sine", "omniglot", "miniimagenet", "mnist", "digits"),
    "model": ("mlp", "conv4", "conv4_strided", "conv4_finn", "conv4_nichol", "metamodel"),
    "inner_optimizer": ("sgd", "adam"),
    "outer_optimizer": ("adam", "sgd"),
    "precision": ("float32", "float64", "bfloat16"),
    "memory_format": ("contiguous", "channels_last"),
    "evaluation": ("transductive", "non_transductive"),
    "inner_state": ("reset", "carry"),
    "inner_loss": ("mean", "sum", "sum_over_shots"),
    "test_checkpoint": ("last", "best"),
    "tracker": tuple(TRACKERS),
}
NON_NEGATIVE = ("query", "train_shots", "test_query", "inner_batch_size", "eval_inner_batch_size")
POSITIVE = ("ways", "shots", "inner_steps", "meta_batch_size", "iterations", "eval_interval",
            "eval_episodes", "test_episodes", "eval_inner_steps", "checkpoint_interval", "filters")
POSITIVE_FLOAT = ("inner_lr", "outer_lr")
# Upper bounds where a larger value would exhaust memory (episodes are drawn up front; sizes and widths
# set the activations) or overflow a counter, checked before anything is built.
AT_MOST = {"ways": 1000, "shots": 1000, "query": 1000, "meta_batch_size": 10_000, "inner_steps": 100_000,
           "eval_inner_steps": 100_000, "eval_episodes": 100_000, "test_episodes": 100_000, "filters": 4096,
           "task_chunk": 10_000, "num_tasks": 10**8, "iterations": 10**9, "eval_interval": 10**9,
           "checkpoint_interval": 10**9, "train_shots": 1000, "test_query": 1000, "inner_batch_size": 10**6,
           "eval_inner_batch_size": 10**6}
EXAMPLES_PER_BATCH = 10**6  # ways * (shots + query) * meta_batch_size, the examples one meta-batch holds
# Fields that only some algorithms read; each algorithm class lists the ones it reads in ``uses``, and a
# non-default value for an algorithm that would ignore it is refused rather than recorded as used.
OPTIONAL_FIELDS = ("inner_state",)


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so the dict dumps to YAML/JSON cleanly."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _suggest(name: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _coerce(where: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a dataclass field annotation, converting only where lossless."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(where, value, inner[0])
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}; write e.g. {where.split('.')[-1]}: [a, b]")
        return tuple(_coerce(f"{where}[{i}]", v, args[0]) for i, v in enumerate(value))
    if dataclasses.is_dataclass(annotation):
        if value is None:
            return annotation()
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of fields, got {value!r}")
        return _build(annotation, value, prefix=f"{where}.")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as text; it is still a number
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {annotation!r} for {where}")


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"unknown field '{prefix}{key}'{_suggest(key, names)}; "
                              f"known fields: {', '.join(names)}")
        kwargs[key] = _coerce(f"{prefix}{key}", value, hints[key])
    return cls(**kwargs)


def validate(cfg: RunConfig) -> RunConfig:
    """Range and choice checks that need more than a type; returns ``cfg`` unchanged."""
    from metacompare.algorithms import ALGORITHMS, BACKENDS  # late: algorithms import this module

    if cfg.algorithm not in ALGORITHMS:
        raise ConfigError(f"algorithm: unknown '{cfg.algorithm}'{_suggest(cfg.algorithm, ALGORITHMS)}; "
                          f"choose one of {', '.join(sorted(ALGORITHMS))}")
    if cfg.backend not in BACKENDS:
        raise ConfigError(f"backend: unknown '{cfg.backend}'{_suggest(cfg.backend, BACKENDS)}; "
                          f"choose one of {', '.join(BACKENDS)}")
    supported = ALGORITHMS[cfg.algorithm].backends
    if cfg.backend not in supported:
        raise ConfigError(f"backend: {cfg.algorithm} cannot run on '{cfg.backend}'; "
                          f"set backend to one of {', '.join(supported)}")
    for name, options in CHOICES.items():
        value = getattr(cfg, name)
        if value not in options:
            raise ConfigError(f"{name}: unknown '{value}'{_suggest(value, options)}; "
                              f"choose one of {', '.join(options)}")
    for name in POSITIVE:
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"{name}: must be a positive whole number, got {getattr(cfg, name)}")
    for name in NON_NEGATIVE:
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name}: must be 0 or a positive whole number, got {getattr(cfg, name)}")
    _check_bounds(cfg)
    _validate_protocol(cfg)
    _check_used(cfg, ALGORITHMS)
    if any(steps <= 0 for steps in cfg.test_inner_steps):
        raise ConfigError(f"test_inner_steps: each entry must be a positive number of steps, got {list(cfg.test_inner_steps)}")
    for name in POSITIVE_FLOAT:
        value = getattr(cfg, name)
        if not value > 0 or value == float("inf"):
            raise ConfigError(f"{name}: must be a positive finite number, got {value}")
    if cfg.task_chunk < 0:
        raise ConfigError(f"task_chunk: must be 0 (the whole meta-batch) or a positive number of tasks, "
                          f"got {cfg.task_chunk}")
    if cfg.batch_tasks and cfg.backend != "metacompare":
        raise ConfigError(f"batch_tasks: task batching runs on the metacompare backend only; set backend: "
                          f"metacompare or batch_tasks: false (got backend '{cfg.backend}')")
    if cfg.num_tasks == 0 or cfg.num_tasks < -1:
        raise ConfigError(f"num_tasks: must be a positive number of distinct training tasks, or -1 for "
                          f"unlimited; got {cfg.num_tasks}")
    if cfg.dataset == "sine":
        if cfg.model != "mlp":
            raise ConfigError(f"model: sine regression uses the 'mlp' model, got '{cfg.model}'")
        if cfg.ways != 1:
            raise ConfigError(f"ways: sine regression tasks have one function, set ways: 1 (got {cfg.ways})")
    elif cfg.model == "mlp":
        raise ConfigError(f"model: {cfg.dataset} needs a conv model; set model: conv4 or conv4_strided "
                          f"(or metamodel, the seed's MLP)")
    if cfg.dataset in ("mnist", "digits"):
        from metacompare.digits import check_digit_split  # late: it imports this module

        check_digit_split(cfg)
    if cfg.dataset == "omniglot" and cfg.model == "conv4" and cfg.omniglot.image_size < 16:
        raise ConfigError(f"omniglot.image_size: conv4 halves the image four times and needs at least 16 "
                          f"pixels, got {cfg.omniglot.image_size}; raise it or set model: conv4_strided")
    if not cfg.omniglot.sources:
        raise ConfigError("omniglot.sources: the list is empty; name at least one, e.g. [images_background]")
    for name in ("seed", "eval_seed"):
        if not 0 <= getattr(cfg, name) < 2**32:
            raise ConfigError(f"{name}: must be a whole number from 0 to 2**32 - 1, got {getattr(cfg, name)}")
    if cfg.device != "cpu" and not cfg.device.startswith("cuda"):
        raise ConfigError(f"device: unknown '{cfg.device}'; use cpu, cuda or cuda:N")
    if cfg.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"device: '{cfg.device}' asked for but no CUDA GPU is visible; set device: cpu")
    if not cfg.experiment or "/" in cfg.experiment or cfg.experiment in (".", ".."):
        raise ConfigError(f"experiment: must be a non-empty name without '/', got '{cfg.experiment}'")
    if cfg.precision == "bfloat16" and cfg.algorithm == "maml" and cfg.inner_steps > 1:
        # allowed, but measured by `bench`: bf16 error compounds through the second-order pass
        warnings.warn(f"precision: bfloat16 with maml and inner_steps={cfg.inner_steps}: at 5 steps its "
                      f"meta-gradient differed from float32 by up to 84% of the largest entry (README, "
                      f"Performance); use float32 for multi-step MAML", stacklevel=2)
    return cfg


def _validate_protocol(cfg: RunConfig) -> None:
    """The protocol knobs: ranges, and combinations an algorithm or backend cannot run."""
    from metacompare.algorithms import ALGORITHMS

    if cfg.query == 0 and getattr(ALGORITHMS[cfg.algorithm], "needs_query", True):
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
    plain = (cfg.inner_optimizer == "sgd" and cfg.inner_batch_size == 0 and cfg.inner_loss == "mean")
    if cfg.backend != "metacompare" and not plain:
        raise ConfigError(f"backend: {cfg.backend} runs full-batch SGD on a mean loss only; set backend: "
                          f"metacompare for inner_optimizer/inner_batch_size/inner_loss")
    procedure = cfg.common_evaluation
    if procedure is not None:
        if procedure.optimizer not in CHOICES["inner_optimizer"]:
            raise ConfigError(f"common_evaluation.optimizer: choose one of {', '.join(CHOICES['inner_optimizer'])}, "
                              f"got '{procedure.optimizer}'")
        if not 0 < procedure.lr < float("inf") or procedure.steps <= 0 or procedure.batch_size < 0:
            raise ConfigError("common_evaluation: lr must be a positive number, steps a positive whole "
                              "number and batch_size >= 0")
    for name in ("seconds", "cpu_seconds", "work"):
        value = getattr(cfg.budget, name)
        if value is not None and not 0 < value < float("inf"):
            raise ConfigError(f"budget.{name}: must be a positive number or null, got {value}")
    if cfg.budget.cpu_seconds is not None and cfg.device != "cpu":
        raise ConfigError(f"budget.cpu_seconds: CPU time does not count work on device {cfg.device}; "
                          f"use budget.seconds (wall clock) there")
    if cfg.budget.evaluations < 0:
        raise ConfigError(f"budget.evaluations: must be 0 (every eval_interval) or a positive count, got "
                          f"{cfg.budget.evaluations}")
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


def _check_used(cfg: RunConfig, algorithms: dict[str, type]) -> None:
    """Refuse a setting the algorithm would silently ignore (its class's ``uses`` omits the field)."""
    defaults = RunConfig()
    for name in OPTIONAL_FIELDS:
        value, default = getattr(cfg, name), getattr(defaults, name)
        if value != default and name not in getattr(algorithms[cfg.algorithm], "uses", ()):
            users = sorted(n for n, c in algorithms.items() if name in getattr(c, "uses", ()))
            raise ConfigError(f"{name}: {cfg.algorithm} ignores it, so '{value}' would be recorded but not used "
                              f"(only {', '.join(users) or 'no algorithm'} reads it); set {name}: {default}, or "
                              f"set it for those algorithms under per_algorithm:")


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value is read as YAML so numbers stay numbers."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected key=value, e.g. --set inner_lr=0.1")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _apply(values: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key (``omniglot.rotations``) in a nested dict."""
    parts = key.split(".")
    target = values
    for part in parts[:-1]:
        nested = target.get(part)
        if nested is None:
            nested = target[part] = {}
        if not isinstance(nested, dict):
            raise ConfigError(f"--set {key}: '{part}' is not a section")
        target = nested
    target[parts[-1]] = value


def load_experiment(path: str | Path, overrides: typing.Sequence[str] = ()) -> list[RunConfig]:
    """Read a config file: one run, or one per algorithm when ``algorithm`` is a list.

    ``per_algorithm: {reptile: {inner_steps: 5}}`` sets fields for one algorithm only, because the
    papers tune Reptile and MAML differently. ``--set`` overrides apply last, to every run.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file; see configs/ for examples")
    raw = files.read_yaml(path, "fix the file (see configs/sine.yaml)",
                          empty="the config file is empty; set at least dataset and algorithm")
    return expand(raw, overrides, source=str(path))


_StrictLoader = files.StrictLoader  # one strict YAML reader for configs and sweep files


def expand(raw: dict[str, Any], overrides: typing.Sequence[str] = (), source: str = "config") -> list[RunConfig]:
    """Turn one raw mapping (file contents) into validated run configs."""
    raw = dict(raw)
    per_algorithm = raw.pop("per_algorithm", None) or {}
    parsed = [parse_override(o) for o in overrides]
    for key, value in parsed:
        if key == "algorithm":
            raw["algorithm"] = value
    algorithms = raw.get("algorithm", RunConfig.algorithm)
    algorithms = list(algorithms) if isinstance(algorithms, (list, tuple)) else [algorithms]
    if not algorithms:
        raise ConfigError(f"{source}: algorithm: the list is empty; name at least one, e.g. algorithm: [maml]")
    if not all(isinstance(name, str) for name in algorithms):
        raise ConfigError(f"{source}: algorithm: expected a name or a list of names, got {algorithms!r}")
    if not isinstance(per_algorithm, dict):
        raise ConfigError(f"{source}: per_algorithm must map algorithm names to fields")
    _check_per_algorithm(per_algorithm, source)
    configs = []
    for name in algorithms:
        values = {k: v for k, v in raw.items()}
        values["algorithm"] = name
        for key, value in (per_algorithm.get(name) or {}).items():
            values[key] = value
        for key, value in parsed:
            if key != "algorithm":
                _apply(values, key, value)
        try:
            configs.append(validate(_build(RunConfig, values)))
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
    _check_same_episodes(configs, source)
    return configs


# What defines the validation and test episodes: one comparison scores every algorithm on the same ones.
EPISODE_FIELDS = ("dataset", "data_root", "ways", "shots", "evaluation_query", "eval_seed", "eval_episodes",
                  "test_episodes", "omniglot", "miniimagenet", "evaluation")


def _check_same_episodes(configs: list[RunConfig], source: str) -> None:
    """Refuse a comparison whose per_algorithm settings would give its algorithms different test episodes."""
    first = configs[0]
    for other in configs[1:]:
        differ = [name for name in EPISODE_FIELDS if getattr(first, name) != getattr(other, name)]
        if differ:
            fields = ", ".join("test_query (or query)" if d == "evaluation_query" else d for d in differ)
            raise ConfigError(f"{source}: per_algorithm gives {first.algorithm} and {other.algorithm} different "
                              f"test episodes ({fields}); set these fields once for all algorithms")


def _check_per_algorithm(per_algorithm: dict[str, Any], source: str) -> None:
    """Each ``per_algorithm`` key is a registered algorithm and maps to fields: a typo there would
    otherwise silently drop that algorithm's settings."""
    from metacompare.algorithms import ALGORITHMS

    for name, fields in per_algorithm.items():
        if name not in ALGORITHMS:
            raise ConfigError(f"{source}: per_algorithm: unknown algorithm '{name}'{_suggest(str(name), ALGORITHMS)}; "
                              f"choose from {', '.join(sorted(ALGORITHMS))}")
        if fields is not None and not isinstance(fields, dict):
            raise ConfigError(f"{source}: per_algorithm.{name}: expected a mapping of fields, got {fields!r}; "
                              f"write e.g. per_algorithm: {{{name}: {{inner_lr: 0.1}}}}")


def with_overrides(cfg: RunConfig, **changes: Any) -> RunConfig:
    """A validated copy with some fields changed (sweeps use this)."""
    values = cfg.to_dict()
    for key, value in changes.items():
        _apply(values, key, value)
    return validate(_build(RunConfig, values))


def dump(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def reported_accuracy(path: str | Path) -> dict[str, float]:
    """The published accuracies (%) a paper config cites in its ``# reported_accuracy: {algo: x}`` line.

    Kept in a comment so that the config itself stays a plain run description; ``report`` can draw
    these as reference marks. Empty when the file has no such line.
    """
    for line in Path(path).read_text().splitlines():
        if line.startswith("# reported_accuracy:"):
            values = yaml.safe_load(line.removeprefix("# reported_accuracy:"))
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: '# reported_accuracy:' must be followed by {{algorithm: percent}}")
            return {str(k): float(v) for k, v in values.items()}
    return {}
