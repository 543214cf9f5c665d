"""Few-shot tasks on learn2learn: one task (:class:`Task`), the seeded sampler that draws them from a
source's datasets (:class:`TaskSampler`) and the training sampler and fixed evaluation episodes of a
config (:func:`build_tasks`).

Every source's datasets are plain ``torch`` datasets wrapped in ``l2l.data.MetaDataset`` and sampled
by an ``l2l.data.TaskDataset`` with ``NWays`` / ``KShots`` / ``LoadData``; labels are remapped to
0..ways-1 per task. learn2learn draws tasks with Python's ``random``; every draw here happens under an
explicitly seeded ``random.Random`` state, so the set of training tasks (``num_tasks``) and the
evaluation episodes depend on the config's seeds alone.
"""

from __future__ import annotations

import functools
import hashlib
import random
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset

from metacompare._l2l import l2l
from metacompare.data.source import source_of
from metacompare.errors import DataError
from metacompare.config.runconfig import RunConfig
from metacompare.data.source import classifies


def stream_seed(seed: int, stream: str) -> int:
    """A 32-bit seed for one named random stream: distinct streams never share a seed by accident
    (with plain offsets, a training ``seed`` equal to ``eval_seed + 2`` made the training sine functions
    the test functions)."""
    digest = hashlib.sha256(f"{stream}:{seed}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


@dataclass
class Task:
    """One few-shot task: the support set to adapt on and the query set to score."""

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    classes: torch.Tensor | None = None  # dataset-wide class of each task label (classification only)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Task":
        def move(t: torch.Tensor) -> torch.Tensor:
            if dtype is not None and t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device)

        return Task(move(self.support_x), move(self.support_y), move(self.query_x), move(self.query_y),
                    self.classes)

    @property
    def all_x(self) -> torch.Tensor:
        return torch.cat([self.support_x, self.query_x])

    @property
    def all_y(self) -> torch.Tensor:
        return torch.cat([self.support_y, self.query_y])


def _split_task(x: torch.Tensor, y: torch.Tensor, ways: int, shots: int, classify: bool,
                permutation: list[int] | None = None) -> Task:
    """Support = the first ``shots`` examples of each class, query = the rest.

    Classification labels arrive as dataset-wide classes; they become 0..ways-1 here (what
    l2l's RemapLabels + ConsecutiveLabels do), keeping the originals in ``Task.classes`` for the
    ``pretrain`` baseline, which trains one classifier over all meta-training classes.
    ``permutation`` shuffles which class gets which label, so no class is tied to one output unit.
    """
    classes = None
    if classify:
        order = torch.argsort(y, stable=True)
        x, y = x[order], y[order]
        classes, y = torch.unique(y, sorted=True, return_inverse=True)
        if permutation is not None:
            labels = torch.tensor(permutation)
            y = labels[y]
            classes = classes[torch.argsort(labels)]
    per_class = len(x) // ways
    index = torch.arange(len(x)).view(ways, per_class)
    support, query = index[:, :shots].reshape(-1), index[:, shots:].reshape(-1)
    return Task(x[support], y[support], x[query], y[query], classes)


class TaskSampler:
    """A learn2learn ``TaskDataset`` whose randomness is owned by one seeded ``random.Random``."""

    def __init__(self, dataset: Dataset, cfg: RunConfig, num_tasks: int, seed: int, split: str,
                 shots: int | None = None, query: int | None = None, rotate: bool = False):
        """``shots``/``query``: examples per class (default: the config's training-task sizes)."""
        classify = classifies(cfg)
        shots = cfg.training_shots if shots is None else shots
        query = cfg.query if query is None else query
        meta = l2l.data.MetaDataset(dataset, labels_to_indices=dataset.labels_to_indices,
                                    indices_to_labels=dataset.indices_to_labels)
        classes = len(meta.labels)
        if cfg.ways > classes:
            raise DataError(f"ways: {cfg.ways} exceeds the {classes} classes of the {split} split; "
                            f"lower ways or give the split more alphabets")
        smallest = min(len(v) for v in dataset.labels_to_indices.values())
        if shots + query > smallest:
            raise DataError(f"shots + query: {shots} + {query} exceeds the {smallest} examples per "
                            f"class of the {split} split; lower shots or query (or train_shots, test_query)")
        transforms = [l2l.data.transforms.NWays(meta, cfg.ways),
                      l2l.data.transforms.KShots(meta, shots + query),
                      l2l.data.transforms.LoadData(meta)]
        self.num_classes = classes
        self.tasks = l2l.data.TaskDataset(meta, task_transforms=transforms, num_tasks=num_tasks)
        self.rng = random.Random(seed)
        self.cfg, self.classify = cfg, classify
        self.shots, self.rotate = shots, rotate
        if num_tasks > 0:  # fix the finite task set now, in index order, from this sampler's seed
            with self._own_random():
                for i in range(num_tasks):
                    self.tasks[i]

    def _own_random(self):
        sampler = self

        class _Swap:
            def __enter__(self):
                self.saved = random.getstate()
                random.setstate(sampler.rng.getstate())

            def __exit__(self, *exc):
                sampler.rng.setstate(random.getstate())
                random.setstate(self.saved)

        return _Swap()

    def sample(self) -> Task:
        with self._own_random():
            x, y = self.tasks.sample()
        permutation = self.rng.sample(range(self.cfg.ways), self.cfg.ways) if self.classify else None
        if self.rotate:
            x = self._rotate_classes(x, y)
        return _split_task(x, y, self.cfg.ways, self.shots, self.classify, permutation)

    def _rotate_classes(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Turn each class of the task by its own random multiple of 90 degrees (Finn et al.'s Omniglot)."""
        x = x.clone()
        for label in sorted(set(y.tolist())):
            rows = y == label
            x[rows] = torch.rot90(x[rows], self.rng.randrange(4), dims=(-2, -1))
        return x

    def episodes(self, count: int) -> list[Task]:
        return [self.sample() for _ in range(count)]


def train_class_episodes_seed(eval_seed: int) -> int:
    """Seed of the fresh training-class episodes: a named stream lifted past 2**32, so that it can never
    equal a :func:`stream_seed` (all below 2**32) of the training, validation or test tasks."""
    return 2**32 + stream_seed(eval_seed, "train-class episodes")


@dataclass
class TaskSplits:
    train: TaskSampler
    validation: list[Task]
    test: list[Task]
    train_episodes: list[Task] = field(default_factory=list)  # fresh tasks of the training classes
    record: dict | None = None  # a user dataset's split and digest, written into the run (data.splits)


def build_tasks(cfg: RunConfig) -> TaskSplits:
    """The training sampler and the fixed validation and test episodes for ``cfg``.

    Training tasks depend on ``seed`` (and ``num_tasks``); the evaluation episodes depend on
    ``eval_seed`` alone, so every algorithm and every seed is scored on the very same tasks.
    ``train_episodes`` are ``test_episodes`` fresh tasks of the training classes (or sine functions),
    for the generalisation gap.
    """
    source = source_of(cfg)
    datasets, record = source.splits(cfg)
    per_task = functools.partial(source.rotated, cfg)
    train = TaskSampler(datasets["train"], cfg, cfg.num_tasks, stream_seed(cfg.seed, "train tasks"), "train",
                        cfg.training_shots, cfg.query, per_task("train"))
    evaluation = {split: TaskSampler(datasets[split], cfg, -1, stream_seed(cfg.eval_seed, f"{split} tasks"), split,
                                     cfg.shots, cfg.evaluation_query, per_task(split))
                  for split in ("validation", "test")}
    # Scored like the test episodes, on the training classes: the generalisation gap.
    fresh = TaskSampler(datasets["train"], cfg, -1, train_class_episodes_seed(cfg.eval_seed), "train",
                        cfg.shots, cfg.evaluation_query, per_task("train"))
    return TaskSplits(train, evaluation["validation"].episodes(cfg.eval_episodes),
                      evaluation["test"].episodes(cfg.test_episodes), fresh.episodes(cfg.test_episodes), record)
