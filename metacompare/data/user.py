"""A researcher's own data as the three task datasets a run needs (``dataset: folder | table | text``).

:func:`load_source` reads what the data is (classes, their examples, a digest) without decoding an
image; :func:`user_splits` deals the classes into class-disjoint splits
(:mod:`metacompare.data.splits`), checks the configured tasks fit them and returns one
learn2learn-ready dataset per split (``labels_to_indices`` / ``indices_to_labels``), which
:class:`metacompare.data.TaskSampler` samples with ``NWays`` / ``KShots`` / ``LoadData`` like every
other dataset here. :func:`input_shape` tells :mod:`metacompare.models` what the network takes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from metacompare.data import folder, splits, table, text
from metacompare.data.index import FolderIndex, index_folder
from metacompare.errors import DataError
from metacompare.runconfig import RunConfig

USER_FORMS = ("folder", "table", "text")
PROBE_FILES = 16  # image headers read to tell grey from colour


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


def load_source(cfg: RunConfig) -> Source:
    ud = cfg.user_data
    if not ud.root:
        raise DataError(f"user_data.root: empty; set it to the image folder or table of dataset: {cfg.dataset}")
    path = Path(ud.root)
    if cfg.dataset == "folder":
        index = index_folder(path)
        source = Source("folder", path, index.classes, index.groups, index.labels, index.digest, index)
    elif cfg.dataset == "table":
        rows = table.read_table(path, ud.label_column)
        source = Source("table", path, rows.classes, [""] * len(rows.classes), rows.labels, file_digest(path), rows)
    else:
        texts = text.read_texts(path, ud.text_column, ud.label_column, ud.vocab_buckets, ud.max_tokens)
        source = Source("text", path, texts.classes, [""] * len(texts.classes), texts.labels, file_digest(path), texts)
    source.per_class = np.bincount(np.asarray(source.labels, dtype=np.int64), minlength=len(source.classes)).tolist()
    if len(source.classes) < 2:
        column = "" if source.form == "folder" else f" in column '{ud.label_column}'"
        raise DataError(f"{path}: every example has the one class '{source.classes[0]}'{column}; few-shot tasks "
                        f"need several classes (at least 3 x ways for disjoint splits)")
    return source


def image_shape(cfg: RunConfig, index: FolderIndex | None = None) -> tuple[int, int]:
    """(channels, size) of a folder's images: configured, or detected from a few files' headers."""
    ud = cfg.user_data
    channels = ud.channels
    if channels == 0:
        index = index or index_folder(ud.root)
        step = max(1, len(index.files) // PROBE_FILES)
        modes = {folder.header(index.root / name, index.root)[0] for name in index.files[::step][:PROBE_FILES]}
        channels = 1 if modes <= folder.GREY_MODES else 3
    return channels, image_size(cfg, channels)


def image_size(cfg: RunConfig, channels: int) -> int:
    """The side images are resized to: configured, or Omniglot's 28 (grey) and mini-ImageNet's 84 (colour)."""
    return cfg.user_data.image_size or (28 if channels == 1 else 84)


def input_shape(cfg: RunConfig) -> tuple[int, ...]:
    """What one example is: ``(channels, size, size)``, ``(width,)`` or ``(max_tokens,)``."""
    ud = cfg.user_data
    if cfg.dataset == "folder":
        channels, size = image_shape(cfg)
        return channels, size, size
    if cfg.dataset == "table":
        return (table.width_of(ud.root, ud.label_column),)
    return (ud.max_tokens,)


def split_of(cfg: RunConfig, source: Source) -> dict[str, list[int]]:
    ud = cfg.user_data
    return splits.split_classes(source.classes, source.groups, ud.validation_fraction, ud.test_fraction, ud.split_seed)


def _members(labels: list[int], chosen: list[int]) -> tuple[list[int], list[int]]:
    """Indices of the examples of ``chosen`` classes, and their labels renumbered 0..len(chosen)-1."""
    number = {c: i for i, c in enumerate(chosen)}
    indices = [i for i, label in enumerate(labels) if label in number]
    return indices, [number[labels[i]] for i in indices]


def _dataset(cfg: RunConfig, source: Source, chosen: list[int], shape: Any, stats: Any) -> Dataset:
    indices, labels = _members(source.labels, chosen)
    ud = cfg.user_data
    if source.form == "folder":
        channels, size = shape
        return folder.FolderImages(source.path, [source.payload.files[i] for i in indices], labels, channels,
                                   size, ud.invert, ud.cache_mb)
    if source.form == "table":
        values = source.payload.features[indices]
        if stats is not None:
            values = (values - stats[0]) / stats[1]
        return table.Vectors(torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)), labels)
    return table.Vectors(torch.from_numpy(source.payload.ids[indices]), labels)


def user_splits(cfg: RunConfig) -> tuple[dict[str, Dataset], dict[str, Any]]:
    """One dataset per split, and the record a run writes (``splits.json``)."""
    source = load_source(cfg)
    split = split_of(cfg, source)
    splits.check_split(cfg, str(source.path), source.classes, source.per_class, split, source.grouped)
    shape = image_shape(cfg, source.payload) if source.form == "folder" else None
    stats = None
    if source.form == "table" and cfg.user_data.standardize:
        stats = table.standardizer(source.payload.features[_members(source.labels, split["train"])[0]])
    train = _dataset(cfg, source, split["train"], shape, stats)
    datasets = {"train": train, "test": _dataset(cfg, source, split["test"], shape, stats),
                "validation": _dataset(cfg, source, split["validation"], shape, stats) if split["validation"] else train}
    record = {"form": source.form, "root": str(source.path), "digest": source.digest, "examples": len(source.labels),
              "split_seed": cfg.user_data.split_seed, "validation_from_train": not split["validation"],
              "classes": {name: [source.classes[c] for c in split[name]] for name in splits.SPLITS}}
    if shape is not None:
        record["image"] = {"channels": shape[0], "size": shape[1]}
    return datasets, record
