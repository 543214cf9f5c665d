"""A researcher's own data as the three task datasets a run needs (``dataset: folder | table | text``).

:class:`UserSource` is what the three forms share: :meth:`UserSource.load` reads what the data is
(classes, their examples, a digest) without decoding an image; :meth:`UserSource.splits` deals the
classes into class-disjoint splits (:mod:`metacompare.data.splits`), checks the configured tasks fit them
and returns one learn2learn-ready dataset per split (``labels_to_indices`` / ``indices_to_labels``), which
:class:`metacompare.data.TaskSampler` samples with ``NWays`` / ``KShots`` / ``LoadData`` like every other
dataset here. Each form (:mod:`~metacompare.data.folder`, :mod:`~metacompare.data.table`,
:mod:`~metacompare.data.text`) says how to read it, what one example is and what ``inspect`` shows of it.
"""

from __future__ import annotations

import hashlib
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from metacompare.data import splits
from metacompare.data.source import DataSource, source_of
from metacompare.errors import ConfigError, DataError
from metacompare.config.runconfig import RunConfig

QUERIES = (1, 5, 15)  # query sizes inspect reports the largest task for


@dataclass
class Source:
    """What a user's data holds: every example's class, class names and groups, and a digest."""

    form: str
    path: Path
    classes: list[str]
    groups: list[str]
    labels: list[int]
    digest: str
    payload: Any = None  # FolderIndex, TableSource or TextSource
    per_class: list[int] = field(default_factory=list)

    @property
    def grouped(self) -> bool:
        return any(self.groups)


def file_digest(path: Path) -> str:
    """A table's digest: its name, size and modification time, like a folder's files."""
    stat = path.stat()
    return hashlib.sha256(os.fsencode(path.name) + f"\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()



def members(labels: list[int], chosen: list[int]) -> tuple[list[int], list[int]]:
    """Indices of the examples of ``chosen`` classes, and their labels renumbered 0..len(chosen)-1."""
    number = {c: i for i, c in enumerate(chosen)}
    indices = [i for i, label in enumerate(labels) if label in number]
    return indices, [number[labels[i]] for i in indices]


class UserSource(DataSource):
    """What the folder, table and text forms share; each form reads its data (:meth:`read`) and makes
    one split's dataset of it (:meth:`dataset`)."""

    content_digest = True
    section = "user_data"
    holds = "CSV or Parquet file"  # what user_data.root names
    label_column = True  # a column names each example's class (a folder: its subfolder)

    def read(self, cfg: RunConfig, path: Path) -> Source:
        raise NotImplementedError

    def prepare(self, cfg: RunConfig, source: Source, train: list[int]) -> Any:
        """What every split's dataset shares, computed once (``train``: the training classes)."""
        return None

    def dataset(self, cfg: RunConfig, source: Source, chosen: list[int], prepared: Any) -> Dataset:
        raise NotImplementedError

    def recorded(self, prepared: Any) -> dict[str, Any]:
        """What the run's record adds about the prepared data (a folder: the images' shape)."""
        return {}

    def payload_lines(self, cfg: RunConfig, source: Source, verify: bool) -> list[str]:
        """``inspect``'s lines on what one example is."""
        return []

    def channels(self, cfg: RunConfig, source: Source) -> int:
        return 1

    def network_for(self, algorithm: str, channels: int) -> dict[str, Any]:
        """The network ``--data`` gives ``algorithm`` on this form (``model``, and its width where it matters)."""
        return {"model": self.networks[0]}

    def protocol_changes(self, algorithm: str) -> dict[str, Any]:
        """What ``--data`` changes in ``algorithm``'s recorded protocol for this form (:mod:`.defaults`)."""
        return {}

    def check(self, cfg: RunConfig) -> None:
        super().check(cfg)
        if not cfg.user_data.root:
            raise ConfigError(f"user_data.root: empty; set it to the {self.holds} of dataset: {self.name}")

    def episode_fields(self, config: dict[str, Any], data: str | None) -> dict[str, Any]:
        fields = super().episode_fields(config, data)
        del fields["data_root"]
        return {**fields, "data": data or (config.get("user_data") or {}).get("root")}

    def digest(self, root: Path) -> str:
        """A table's digest (:func:`file_digest`); a folder's is its index's."""
        if not root.is_file():
            raise DataError(f"{root}: no such file; user_data.root names the table the runs were made on")
        return file_digest(root)

    def load(self, cfg: RunConfig) -> Source:
        ud = cfg.user_data
        if not ud.root:
            raise DataError(f"user_data.root: empty; set it to the image folder or table of dataset: {cfg.dataset}")
        path = Path(ud.root)
        source = self.read(cfg, path)
        source.per_class = np.bincount(np.asarray(source.labels, dtype=np.int64), minlength=len(source.classes)).tolist()
        if len(source.classes) < 2:
            column = f" in column '{ud.label_column}'" if self.label_column else ""
            raise DataError(f"{path}: every example has the one class '{source.classes[0]}'{column}; few-shot tasks "
                            f"need several classes (at least 3 x ways for disjoint splits)")
        return source

    def splits(self, cfg: RunConfig) -> tuple[dict[str, Dataset], dict[str, Any]]:
        """One dataset per split, and the record a run writes (``splits.json``)."""
        source = self.load(cfg)
        split = split_of(cfg, source)
        splits.check_split(cfg, str(source.path), source.classes, source.per_class, split, source.grouped)
        prepared = self.prepare(cfg, source, split["train"])
        train = self.dataset(cfg, source, split["train"], prepared)
        datasets = {"train": train, "test": self.dataset(cfg, source, split["test"], prepared),
                    "validation": self.dataset(cfg, source, split["validation"], prepared) if split["validation"] else train}
        record = {"form": source.form, "root": str(source.path), "digest": source.digest, "examples": len(source.labels),
                  "split_seed": cfg.user_data.split_seed, "validation_from_train": not split["validation"],
                  "classes": {name: [source.classes[c] for c in split[name]] for name in splits.SPLITS},
                  **self.recorded(prepared)}
        return datasets, record

    def describe(self, cfg: RunConfig, verify: bool = False) -> list[str]:
        return self.report(cfg, self.load(cfg), verify)

    def report(self, cfg: RunConfig, source: Source, verify: bool) -> list[str]:
        """What the data holds, the split it gets and the largest tasks it serves; a DataError where the
        configured tasks do not fit."""
        counts = source.per_class
        groups = sorted(set(source.groups) - {""})
        lines = [f"{source.path}: {source.form}" + (" (two levels: group/class)" if groups else ""),
                 f"  classes: {len(source.classes)}" + (f" in {len(groups)} groups" if groups else "")
                 + f"; {len(source.labels)} examples",
                 f"  examples per class: min {min(counts)}, median {statistics.median(counts):g}, max {max(counts)}"
                 + f" (smallest: '{source.classes[counts.index(min(counts))]}')"]
        lines += self.payload_lines(cfg, source, verify)
        ud = cfg.user_data
        split = split_of(cfg, source)
        lines.append(f"  split (user_data.split_seed {ud.split_seed}, validation_fraction "
                     f"{ud.validation_fraction:g}, test_fraction {ud.test_fraction:g}, disjoint by "
                     f"{'group' if groups else 'class'}): "
                     + ", ".join(_split_words(source, split, name) for name in splits.SPLITS))
        lines += _capacity_lines(source, split)
        splits.check_split(cfg, str(source.path), source.classes, counts, split, source.grouped)
        return lines


def load_source(cfg: RunConfig) -> Source:
    """What the user's data of ``cfg`` holds (its form's :meth:`UserSource.load`)."""
    return source_of(cfg).load(cfg)


def split_of(cfg: RunConfig, source: Source) -> dict[str, list[int]]:
    ud = cfg.user_data
    return splits.split_classes(source.classes, source.groups, ud.validation_fraction, ud.test_fraction, ud.split_seed)


def _split_words(source: Source, split: dict, name: str) -> str:
    ids = split[name]
    if not ids:
        return f"{name} = the training classes (fresh episodes)"
    groups = {source.groups[c] for c in ids} - {""}
    return f"{name} {len(ids)} classes" + (f" ({len(groups)} group{'s' if len(groups) != 1 else ''})" if groups else "")


def _capacity_lines(source: Source, split: dict) -> list[str]:
    """The largest N-way K-shot task every split can serve, for a few query sizes."""
    used = {name: split[name] or split["train"] for name in splits.SPLITS}
    ways = min(len(ids) for ids in used.values())
    smallest = min(source.per_class[c] for ids in used.values() for c in ids)
    lines = []
    for q in QUERIES:
        if smallest - q >= 1:
            lines.append(f"  largest task with {q} quer{'y' if q == 1 else 'ies'} per class: {ways}-way "
                         f"{smallest - q}-shot (smallest split {ways} classes, smallest class {smallest} examples)")
    return lines or [f"  largest task: none (a class has {smallest} example{'s' if smallest != 1 else ''}; "
                     f"a task needs at least 2 per class)"]
