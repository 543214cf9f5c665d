"""The data-source registry: ``SOURCES[name]`` is the :class:`DataSource` a config's ``dataset: name``
runs on, added by :func:`register` when its module is imported (the package's ``__init__`` imports
every built-in one).

A source says everything the rest of the package needs to know about its data, so that no other
module asks which dataset a config names: the three task datasets (:meth:`DataSource.splits`), what
one example is (:meth:`DataSource.input_shape`, read by :mod:`metacompare.models`), the networks it
takes and its own config checks (:meth:`DataSource.check`, called by :mod:`metacompare.config.validation`),
and what ``inspect`` prints (:meth:`DataSource.describe`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from metacompare.data.splits import SPLITS
from metacompare.errors import ConfigError
from metacompare.config.runconfig import RunConfig

# The networks that take images; metacompare.models checks each against the images' size.
IMAGE_NETWORKS = ("conv4", "conv4_strided", "conv4_finn", "conv4_nichol", "resnet12", "metamodel")


class DataSource:
    """One kind of data. Subclasses set :attr:`name` and :attr:`networks` and define :meth:`splits`
    and :meth:`input_shape`; the rest has defaults."""

    name: str = ""
    networks: tuple[str, ...] = IMAGE_NETWORKS  # the models it takes
    images: bool = True  # examples are (channels, size, size) images, checked against the network's pooling
    size_field: str = "model"  # the field that sets the image side, where a config may change it
    content_digest: bool = False  # a user's data: runs record its digest and are refused when it changes
    section: str | None = None  # the config section that says which data and split (episode identity)
    grouped_eval: bool = True  # its network has a grouped form (metacompare.engines.batch_eval)
    files_per_split: bool = False  # `download` fetches its files by split, not by source (mini-ImageNet)
    classification: bool = True  # labels are classes (cross-entropy, accuracy); False: regression (MSE)

    def splits(self, cfg: RunConfig) -> tuple[dict[str, Dataset], dict[str, Any] | None]:
        """The train / validation / test datasets (``labels_to_indices`` / ``indices_to_labels``, as
        learn2learn's ``MetaDataset`` takes them) and the record a run writes of them (None: nothing)."""
        raise NotImplementedError

    def input_shape(self, cfg: RunConfig, channels: int | None = None) -> tuple[int, ...]:
        """What one example is; ``channels``: assume this many instead of reading the data to find out."""
        raise NotImplementedError

    def possible_shapes(self, cfg: RunConfig) -> list[tuple[int, ...]]:
        """The shapes the examples may have, known without reading the data (validation checks them all)."""
        return [self.input_shape(cfg)]

    def rotated(self, cfg: RunConfig, split: str) -> bool:
        """Whether each class of a ``split`` task is turned by its own random multiple of 90 degrees."""
        return False

    def check(self, cfg: RunConfig) -> None:
        """The config fits this data: its network, and its own section. One-line ConfigError otherwise."""
        if cfg.model not in self.networks:
            raise ConfigError(self.network_refusal(cfg))

    def network_refusal(self, cfg: RunConfig) -> str:
        if self.images:
            return (f"model: {self.name} needs a conv model; set model: conv4 or conv4_strided "
                    f"(or metamodel, the tutorial's MLP)")
        return f"model: dataset {self.name} takes model: {' or '.join(self.networks)}, got '{cfg.model}'"

    def episode_fields(self, config: dict[str, Any], data: str | None) -> dict[str, Any]:
        """What fixes this data's evaluation episodes beyond the tasks' sizes and seeds
        (:func:`metacompare.storage.provenance.episode_identity`), read from a run's recorded ``config``:
        its section's settings (not where the files lie) and where the data is (``data``: its digest)."""
        out = {f"{self.section}.{key}": value for key, value in sorted((config.get(self.section) or {}).items())
               if self.section and key not in ("root", "download", "cache_mb", "embedding_dim")}
        return {**out, "data_root": config.get("data_root")}

    def digest(self, root: Path) -> str:
        """A digest of the data at ``root`` now (sources with :attr:`content_digest`)."""
        raise NotImplementedError(f"{self.name} records no digest of its data")

    def describe(self, cfg: RunConfig, verify: bool = False) -> list[str]:
        """What ``inspect`` prints: the input shape and each split's classes and examples."""
        datasets, _ = self.splits(cfg)
        lines = [f"{self.name}: examples of shape {tuple(self.input_shape(cfg))}"]
        for split in SPLITS:
            per_class = [len(ids) for ids in datasets[split].labels_to_indices.values()]
            lines.append(f"  {split}: {len(per_class)} classes, {sum(per_class)} examples "
                         f"(per class: min {min(per_class)}, max {max(per_class)})")
        return lines


SOURCES: dict[str, DataSource] = {}


def register(source: DataSource) -> DataSource:
    """Make ``source`` the data of ``dataset: source.name``."""
    if SOURCES.setdefault(source.name, source) is not source:
        raise ValueError(f"data source '{source.name}' is registered twice")
    return source


def unregister(name: str) -> None:
    """Remove a source registered for a while (a test's toy source)."""
    del SOURCES[name]


def classifies(cfg: RunConfig | str) -> bool:
    """Whether the tasks of ``cfg`` (or of a dataset name, as a recorded run names it) are classification,
    scored by accuracy, or regression, scored by MSE. A name no source has (an old record) counts as
    classification."""
    source = SOURCES.get(cfg if isinstance(cfg, str) else cfg.dataset)
    return source is None or source.classification


def source_of(cfg: RunConfig | str) -> DataSource:
    """The registered source of ``cfg.dataset`` (or of a dataset name)."""
    name = cfg if isinstance(cfg, str) else cfg.dataset
    try:
        return SOURCES[name]
    except KeyError:
        raise ConfigError(f"dataset: unknown '{name}'; choose from {', '.join(SOURCES)}") from None
