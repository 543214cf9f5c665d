"""Task datasets on learn2learn: sine-wave regression and Omniglot here; mini-ImageNet, the digits and
a user's own folder, table or texts (:mod:`metacompare.data.user`) in this package's other modules.

Both are plain ``torch`` datasets wrapped in ``l2l.data.MetaDataset`` and sampled by an
``l2l.data.TaskDataset`` with ``NWays`` / ``KShots`` / ``LoadData``; labels are remapped to 0..ways-1 per task. learn2learn draws tasks with Python's ``random``; every
draw here happens under an explicitly seeded ``random.Random`` state, so the set of training tasks
(``num_tasks``) and the evaluation episodes depend on the config's seeds alone.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import io
import math
import os
import random
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from metacompare import paths
from metacompare._l2l import l2l
from metacompare.data.digits import digit_splits
from metacompare.data.labelled import Labelled
from metacompare.errors import DataError, UserError
from metacompare.data.miniimagenet import miniimagenet_splits
from metacompare.data.user import USER_FORMS, user_splits
from metacompare.runconfig import RunConfig

OMNIGLOT_SOURCES = ("images_background", "images_evaluation",
                    "images_background_small1", "images_background_small2")


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


# --------------------------------------------------------------------------------------------- sine
class SineWaves(Dataset):
    """A finite family of sine functions, ``points`` samples each, computed on demand.

    Item ``i`` is point ``i % points`` of function ``i // points``; the function's amplitude
    (0.1-5.0) and phase (0-pi) and the point's x (uniform in [-5, 5]) are fixed by ``seed``, as in the
    sinusoid experiment of Finn, Abbeel & Levine (2017), section 5.1.
    """

    def __init__(self, functions: int, points: int, seed: int):
        rng = np.random.default_rng(seed)
        self.functions, self.points = functions, points
        self.amplitude = rng.uniform(0.1, 5.0, functions).astype(np.float32)
        self.phase = rng.uniform(0.0, math.pi, functions).astype(np.float32)
        self.x = rng.uniform(-5.0, 5.0, (functions, points)).astype(np.float32)
        self.labels_to_indices = {f: list(range(f * points, (f + 1) * points)) for f in range(functions)}
        self.indices_to_labels = {i: i // points for i in range(functions * points)}

    def __len__(self) -> int:
        return self.functions * self.points

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        f, j = divmod(index, self.points)
        x = self.x[f, j]
        y = self.amplitude[f] * np.sin(x - self.phase[f])
        return torch.tensor([x]), torch.tensor([y])


# ----------------------------------------------------------------------------------------- omniglot
def omniglot_help(root: Path, source: str) -> str:
    return (f"get it with `python -m metacompare download omniglot --root {root} --sources {source}` "
            f"or set data_root to the folder that holds the zips")


def _source_entries(root: Path, source: str) -> list[tuple[str, str, bytes]]:
    """(alphabet, character, png bytes) for every image of one official zip or its unpacked folder."""
    folder, archive = root / source, root / f"{source}.zip"
    entries = []
    if folder.is_dir():
        for png in sorted(folder.glob("*/*/*.png")):
            with paths.open_data(png, f"replace it with the image; {omniglot_help(root, source)}") as handle:
                entries.append((png.parent.parent.name, png.parent.name, handle.read()))
    elif os.path.lexists(archive):
        handle = paths.open_data(archive, f"delete it and {omniglot_help(root, source)}")
        try:
            with handle, zipfile.ZipFile(handle) as zf:
                for name in sorted(zf.namelist()):
                    parts = name.split("/")
                    if len(parts) == 4 and parts[3].endswith(".png"):
                        entries.append((parts[1], parts[2], zf.read(name)))
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
            raise DataError(f"{archive}: corrupt or truncated zip ({err}); delete it and "
                            f"{omniglot_help(root, source)}") from None
    else:
        raise DataError(f"omniglot source '{source}' not found: looked for {archive} and {folder}/; "
                        f"{omniglot_help(root, source)}")
    if not entries:
        raise DataError(f"{folder if folder.is_dir() else archive}: holds no images laid out as "
                        f"<source>/<Alphabet>/<character>/<drawer>.png; {omniglot_help(root, source)}")
    return entries


@functools.lru_cache(maxsize=4)
def load_omniglot(root: str, sources: tuple[str, ...], image_size: int) -> dict[tuple[str, str, str], torch.Tensor]:
    """Every character of the given sources as a ``[drawers, 1, S, S]`` float tensor, ink = 1.

    Keys are ``(source, alphabet, character)``; a character that appears in two sources (Greek and
    Latin are in both minimal splits) is kept once, under the first source.
    """
    characters: dict[tuple[str, str, str], list[torch.Tensor]] = {}
    seen: set[tuple[str, str]] = set()
    for source in sources:
        taken = set()
        for alphabet, character, png in _source_entries(Path(root), source):
            if (alphabet, character) in seen:
                continue
            taken.add((alphabet, character))
            try:
                image = Image.open(io.BytesIO(png)).convert("L").resize((image_size, image_size), Image.LANCZOS)
            except OSError as err:
                raise DataError(f"{root}/{source}: unreadable image in {alphabet}/{character} ({err}); "
                                f"re-download the data") from None
            pixels = 1.0 - torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
            characters.setdefault((source, alphabet, character), []).append(pixels[None])
        seen |= taken
    return {key: torch.stack(images) for key, images in characters.items()}


def select_alphabets(selectors: tuple[str, ...], available: set[tuple[str, str]], field: str) -> set[tuple[str, str]]:
    """Resolve ``Alphabet``, ``source/Alphabet`` or ``source/*`` selectors to (source, alphabet) pairs."""
    chosen = set()
    for selector in selectors:
        source, _, alphabet = selector.rpartition("/")
        hits = {(s, a) for s, a in available
                if fnmatch.fnmatchcase(a, alphabet) and (not source or fnmatch.fnmatchcase(s, source))}
        if not hits:
            names = sorted({a for _, a in available})
            raise DataError(f"omniglot.{field}: '{selector}' matches no alphabet of the configured sources; "
                            f"available: {', '.join(names)}")
        chosen |= hits
    return chosen


class OmniglotCharacters(Labelled):
    """Images of chosen characters; with ``rotations`` each 90/180/270-degree turn is a new class."""

    def __init__(self, characters: list[torch.Tensor], rotations: bool):
        images, labels = [], []
        turns = range(4) if rotations else range(1)
        for index, drawings in enumerate(characters):
            for k in turns:
                images.append(torch.rot90(drawings, k, dims=(2, 3)))
                labels.extend([index * len(turns) + k] * len(drawings))
        super().__init__(labels)
        self.images = torch.cat(images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], self.labels[index]


def omniglot_splits(cfg: RunConfig) -> dict[str, OmniglotCharacters]:
    """Train / validation / test datasets, split by alphabet or by character as the config chooses."""
    oc = cfg.omniglot
    root = Path(cfg.data_root)
    if paths.dangling(root):
        raise DataError(f"data_root: {root} {paths.dangling(root)}; {omniglot_help(root, ' '.join(oc.sources))}")
    for source in oc.sources:
        if source not in OMNIGLOT_SOURCES:
            raise DataError(f"omniglot.sources: unknown source '{source}'; choose from {', '.join(OMNIGLOT_SOURCES)}")
    missing = [s for s in oc.sources if not (root / s).is_dir() and not (root / f"{s}.zip").is_file()]
    if missing and oc.download and set(missing) <= {"images_background", "images_evaluation"}:
        from metacompare.download import download_omniglot

        download_omniglot(root, missing)
    characters = load_omniglot(str(root), tuple(oc.sources), oc.image_size)
    keys = _character_split(characters, oc) if oc.split == "characters" else _alphabet_split(characters, oc)
    splits = {}
    for name, chosen in keys.items():
        if not chosen:
            raise DataError(f"omniglot: the {name} split holds no characters; list alphabets in "
                            f"omniglot.{name}_alphabets or change the character counts")
        rotated = name in oc.rotated_splits and oc.rotations and oc.rotation == "classes"
        splits[name] = OmniglotCharacters([characters[key] for key in chosen], rotated)
    return splits


def _character_split(characters: dict, oc) -> dict[str, list]:
    """Nichol et al. and Finn et al.: all characters shuffled with a fixed seed, then cut by count."""
    keys = sorted(characters)
    random.Random(oc.split_seed).shuffle(keys)
    train_end = oc.train_characters
    validation_end = train_end + oc.validation_characters
    if validation_end >= len(keys):
        raise DataError(f"omniglot: train_characters + validation_characters = {validation_end} leaves no "
                        f"test characters out of the {len(keys)} of the configured sources; lower them")
    train, test = keys[:train_end], keys[validation_end:]
    # No validation characters (supervised-reptile has none): validate on fresh training tasks.
    validation = keys[train_end:validation_end] or train
    return {"train": train, "validation": validation, "test": test}


def _alphabet_split(characters: dict, oc) -> dict[str, list]:
    """Alphabet-disjoint splits from the configured alphabet lists."""
    available = {(s, a) for s, a, _ in characters}
    test = select_alphabets(oc.test_alphabets, available, "test_alphabets")
    validation = select_alphabets(oc.validation_alphabets, available, "validation_alphabets")
    if oc.train_alphabets is None:
        train = available - test - validation
    else:
        train = select_alphabets(oc.train_alphabets, available, "train_alphabets")
    for name, a, b in (("train and test", train, test), ("train and validation", train, validation),
                       ("validation and test", validation, test)):
        shared = {alpha for _, alpha in a} & {alpha for _, alpha in b}
        if shared:
            raise DataError(f"omniglot: the {name} splits share alphabets {sorted(shared)}; "
                            f"make the alphabet lists disjoint")
    return {name: [key for key in sorted(characters) if key[:2] in chosen]
            for name, chosen in (("train", train), ("validation", validation), ("test", test))}


# ------------------------------------------------------------------------------------ task sampling
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
        classify = cfg.is_classification
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
    record = None
    if cfg.dataset == "sine":
        points = max(50, cfg.training_shots + cfg.query, cfg.shots + cfg.evaluation_query)
        datasets = {"train": SineWaves(10_000, points, seed=stream_seed(cfg.seed, "train functions")),
                    "validation": SineWaves(1_000, points, seed=stream_seed(cfg.eval_seed, "validation functions")),
                    "test": SineWaves(1_000, points, seed=stream_seed(cfg.eval_seed, "test functions"))}
    elif cfg.dataset == "miniimagenet":
        datasets = miniimagenet_splits(cfg)
    elif cfg.dataset in ("mnist", "digits"):
        datasets = digit_splits(cfg)
    elif cfg.dataset in USER_FORMS:
        datasets, record = user_splits(cfg)
    else:
        datasets = omniglot_splits(cfg)
    def per_task(split: str) -> bool:
        oc = cfg.omniglot
        return (cfg.dataset == "omniglot" and oc.rotations and oc.rotation == "per_task"
                and split in oc.rotated_splits)
    train = TaskSampler(datasets["train"], cfg, cfg.num_tasks, stream_seed(cfg.seed, "train tasks"), "train",
                        cfg.training_shots, cfg.query, per_task("train"))
    evaluation = {split: TaskSampler(datasets[split], cfg, -1, stream_seed(cfg.eval_seed, f"{split} tasks"), split,
                                     cfg.shots, cfg.evaluation_query, per_task(split))
                  for split in ("validation", "test")}
    # Scored like the test episodes, on the training classes: the generalisation gap (outline 9.4).
    fresh = TaskSampler(datasets["train"], cfg, -1, train_class_episodes_seed(cfg.eval_seed), "train",
                        cfg.shots, cfg.evaluation_query, per_task("train"))
    return TaskSplits(train, evaluation["validation"].episodes(cfg.eval_episodes),
                      evaluation["test"].episodes(cfg.test_episodes), fresh.episodes(cfg.test_episodes), record)
