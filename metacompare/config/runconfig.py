"""The typed run configuration: :class:`RunConfig`, its sections, and a run's identity.

Plain frozen dataclasses and nothing else: no file reading and no validation (:mod:`metacompare.config.loading`
loads and :mod:`metacompare.config.validation` checks them), so that every module, algorithms and data
included, can take a ``RunConfig`` without importing the code that validates one against the
registered algorithms.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


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
    """Which digits meta-train, validate and meta-test on ``mnist`` and ``digits`` (metacompare.data.digits).

    ``validation_classes: []`` draws the validation episodes from the training digits (from
    ``eval_seed``, a stream apart from training's ``seed``): ten classes leave no room for a third
    disjoint split of 5-way tasks. ``download`` lets ``mnist`` fetch its files into ``data_root``.
    """

    train_classes: tuple[int, ...] = (0, 1, 2, 3, 4)
    validation_classes: tuple[int, ...] = ()
    test_classes: tuple[int, ...] = (5, 6, 7, 8, 9)
    download: bool = True


@dataclass(frozen=True)
class UserDataConfig:
    """A researcher's own data for ``dataset: folder``, ``table`` or ``text`` (:mod:`metacompare.data.user`).

    ``root``: the image folder (one subfolder per class, or group/class) or the CSV/Parquet file.
    Classes (or, where the folder has two levels, whole groups) are split into meta-training,
    validation and test by the two fractions, shuffled with ``split_seed``; ``validation_fraction: 0``
    validates on fresh episodes of the training classes. Images: ``image_size`` and ``channels`` 0
    detect them (28 pixels grey, 84 colour; grey unless a sampled file is colour), ``invert`` takes
    ``1 - pixel`` (ink = 1, as the Omniglot loader does), ``cache_mb`` bounds the decoded-image cache.
    Text: hashed into ``vocab_buckets`` token ids, ``max_tokens`` per text, ``embedding_dim`` wide.
    """

    root: str = ""
    label_column: str = "label"
    text_column: str = "text"
    validation_fraction: float = 0.2
    test_fraction: float = 0.2
    split_seed: int = 0
    image_size: int = 0
    channels: int = 0
    invert: bool = False
    cache_mb: float = 256.0
    standardize: bool = True
    vocab_buckets: int = 8192
    max_tokens: int = 128
    embedding_dim: int = 32


@dataclass(frozen=True)
class ResNet12Config:
    """``model: resnet12`` (:mod:`metacompare.models.resnet12`): the four blocks' widths (MetaOptNet's 64-160-320-640,
    or 64-128-256-512) and DropBlock after the last two blocks (MetaOptNet: rate 0.1, size 5; 0: off)."""

    widths: tuple[int, ...] = (64, 160, 320, 640)
    dropblock_rate: float = 0.0
    dropblock_size: int = 5


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
    """Bounds on training besides ``iterations`` (:mod:`metacompare.training.budget`): training seconds (validation
    excluded) on the wall clock or in this process's CPU time, or work in example-passes; ``evaluations``:
    validate at that many equally spaced fractions of the budget instead of every ``eval_interval``
    iterations (0)."""

    seconds: float | None = None
    cpu_seconds: float | None = None
    work: float | None = None
    evaluations: int = 0


BUDGET_AT_MOST = {"seconds": 1e8, "cpu_seconds": 1e8, "work": 1e18}  # 1e8 s: about 3 years; a typo beyond


@dataclass(frozen=True)
class MamlPlusPlusConfig:
    """MAML++'s training options (Antoniou, Edwards & Storkey 2019, "How to train your MAML", ICLR,
    section 4), for maml and fomaml; ``mamlpp: null`` (the default) means the algorithm's own choice:
    all off for maml and fomaml, all on with the paper's values for ``maml++``. Writing the section
    (``mamlpp: {}``) starts from everything off. Schedules are fractions of training (iterations or
    budget, as ``outer_lr_final``'s anneal), so they scale with ``iterations`` and with time budgets.

    multi_step_loss (MSL): the meta-loss is the query loss after every inner step, weighted by importance
    weights that anneal towards the last step over the first ``msl_fraction`` of training (paper: 10 of
    100 epochs), then the last step's loss alone. per_step_bn_weights (BNWB) / per_step_bn_statistics
    (BNRS): every BatchNorm2d gets a weight, bias and running statistics per inner step. learned_inner_lr
    (LSLR): one SGD step size per parameter tensor and per inner step, learned by the outer optimiser.
    first_order_fraction (DA): first order for this fraction of training, then second order (paper: 50
    of 100 epochs; 0: never first order).
    """

    multi_step_loss: bool = False
    msl_fraction: float = 0.1
    per_step_bn_weights: bool = False
    per_step_bn_statistics: bool = False
    learned_inner_lr: bool = False
    first_order_fraction: float = 0.0


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
    # with inner_state: carry, this many independent carried chains, each over its contiguous share of
    # the meta-batch (1: the one serial chain of supervised-reptile); what lets Reptile run on processes
    inner_chains: int = 1
    inner_loss: str = "mean"  # inner loss: mean, sum, or sum_over_shots (Finn's sum / K)
    outer_lr: float = 0.001
    outer_optimizer: str = "adam"
    outer_lr_final: float | None = None  # anneal the outer step linearly to this (Reptile: 0)
    # outer_lr_schedule: linear (to outer_lr_final, if set) or cosine (to outer_lr_final, 0 if unset;
    # MAML++'s CA, Antoniou et al. 2019: Adam 0.001 to 1e-5)
    outer_lr_schedule: str = "linear"
    meta_batch_size: int = 25
    iterations: int = 1000
    eval_interval: int = 100
    eval_episodes: int = 100
    test_episodes: int = 600
    # the untrained floor and the training-task gap on the first this many test (and training-class)
    # episodes; 0: all test_episodes (metacompare.training.scoring.floor_count)
    floor_episodes: int = 0
    # measure the logged training fit (metacompare.engines.rules.logged_fit) every this many iterations:
    # an extra forward pass that is measurement, not training, and costs wall time a budget does not buy
    fit_interval: int = 1
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
    # Fast paths (metacompare.models.grouped and metacompare.models.precision; `python -m metacompare bench` measures them): one grouped
    # network for the whole meta-batch, `task_chunk` tasks at a time (0: all); NHWC conv layout.
    # precision: bfloat16 meta-trains under autocast with float32 weights; evaluation stays float32.
    batch_tasks: bool = False
    task_chunk: int = 0
    # The vmap engine (metacompare.engines.vmap): one task's torch.func gradient mapped over the meta-batch.
    vmap: bool = False
    # Validation/test episodes adapted this many at a time in one grouped network (metacompare.engines.batch_eval;
    # 0: one at a time). The scores are the looped ones up to float rounding, so not part of the run id.
    eval_batch: int = 0
    memory_format: str = "contiguous"
    # torch.compile the per-task step / the batched engine (metacompare.engines.torch_compile; README, Performance).
    compile: bool = False
    # Experiment tracking (metacompare.storage.tracking): where a run is logged, not what it computes.
    tracker: str = "tensorboard"
    tracking_uri: str = ""  # MLflow server or store; empty: <results_dir>/mlruns
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    # The budget ladder (metacompare.training.ladder): snapshots at B/2^(n-1), ..., B/2, scored on the test episodes
    # beside the run's own score at B; 0: none. Observes training without changing it: not in the run id.
    budget_rungs: int = 0
    user_data: UserDataConfig = field(default_factory=UserDataConfig)
    mamlpp: MamlPlusPlusConfig | None = None  # MAML++'s options; null: the algorithm's own (see the class)
    resnet12: ResNet12Config = field(default_factory=ResNet12Config)  # model: resnet12's widths, DropBlock

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
    def training_shots(self) -> int:
        return self.train_shots or self.shots

    @property
    def evaluation_query(self) -> int:
        return self.test_query or self.query


# Where files and logs go and which device computes: a moved folder, another GPU or another tracker is
# the same run (the numbers are pinned by one torch thread per run, see runner.pin_threads).
# ``eval_batch``: how many episodes are evaluated at once, not what they score; ``budget_rungs``:
# which snapshots are kept and scored, not what is trained.
NOT_IN_RUN_ID = ("results_dir", "experiment", "device", "data_root", "tracker", "tracking_uri", "eval_batch",
                 "budget_rungs")

# Fields that came after results were first recorded, with the value that does what runs did before the
# field existed (``mamlpp: null``: the algorithm's own choice). At that value a field is left out of
# the identity, so a run keeps the run id it had then: recorded runs and checkpoints are still found.
AS_BEFORE = {"compile": False, "vmap": False, "floor_episodes": 0, "fit_interval": 1, "inner_chains": 1, "outer_lr_schedule": "linear", "mamlpp": None}
SECTIONS_AS_BEFORE = {"budget": BudgetConfig, "digits": DigitsConfig, "user_data": UserDataConfig,
                      "resnet12": ResNet12Config}  # sections: at all their defaults


def identity_of(values: dict[str, Any]) -> dict[str, Any]:
    """A config dict's identifying fields: all but :data:`NOT_IN_RUN_ID`, and without the fields of
    :data:`AS_BEFORE` and :data:`SECTIONS_AS_BEFORE` at the values that do what runs did before them."""
    before = {**AS_BEFORE, **{name: _plain(dataclasses.asdict(section()))
                              for name, section in SECTIONS_AS_BEFORE.items()}}
    body = {k: v for k, v in values.items() if k not in NOT_IN_RUN_ID and not (k in before and v == before[k])}
    if isinstance(body.get("user_data"), dict):  # where the data lies is not the run (like data_root);
        body["user_data"] = {k: v for k, v in body["user_data"].items() if k != "root"}  # its digest guards it
    return body


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so the dict dumps to YAML/JSON cleanly."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
