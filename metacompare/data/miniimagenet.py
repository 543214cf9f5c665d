"""mini-ImageNet (Vinyals et al. 2016; the Ravi & Larochelle 2017 class splits) through learn2learn.

learn2learn's ``MiniImagenet`` reads ``mini-imagenet-cache-{train,validation,test}.pkl`` from the data
folder (a dict with ``image_data``: ``[N, 84, 84, 3]`` uint8 and ``class_dict``: ``{class: [indices]}``)
(about 3 GB in all; ``metacompare.data.download`` fetches them from the mirrors that still serve them). It
holds the images as float 0-255; they are kept here as uint8 (a quarter of the memory) and scaled to
[0, 1] per item, as the MAML and Reptile code do. 64 / 16 / 20 classes of 600 images each in the real files.
"""

from __future__ import annotations

import contextlib
import io
import pickle
from pathlib import Path

import torch

from metacompare import paths
from metacompare._l2l import l2l
from metacompare.data.labelled import Labelled
from metacompare.data.source import DataSource, register
from metacompare.errors import DataError
from metacompare.config.runconfig import RunConfig

SPLITS = ("train", "validation", "test")
IMAGE_SHAPE = (3, 84, 84)


def cache_file(root: Path, split: str) -> Path:
    return Path(root) / f"mini-imagenet-cache-{split}.pkl"


def miniimagenet_help(root: Path) -> str:
    return (f"set miniimagenet.download: true (or run `metacompare download miniimagenet --root {root}`) to "
            f"fetch learn2learn's mini-imagenet-cache-{{train,validation,test}}.pkl into {root} (about 3 GB), "
            f"or put those files there and set data_root to that folder")


class MiniImagenetImages(Labelled):
    """One split's images as uint8 ``[N, 3, 84, 84]``; items are float in [0, 1] with their class."""

    def __init__(self, images: torch.Tensor, labels: list[int]):
        super().__init__(labels)
        self.images = images

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index].float() / 255.0, self.labels[index]


def load_split(root: Path, split: str, download: bool = False) -> MiniImagenetImages:
    """One split through ``l2l.vision.datasets.MiniImagenet``; a missing or bad file is a DataError."""
    root = Path(root)
    path = cache_file(root, split)
    reason = paths.problem(path)  # learn2learn opens it: a FIFO would block it forever
    if reason and reason != paths.NOTHING:
        raise DataError(f"{path}: {reason}; delete it and {miniimagenet_help(root)}")
    if reason:
        if not download:
            raise DataError(f"mini-ImageNet {split} split not found: {path} does not exist; {miniimagenet_help(root)}")
        from metacompare.data.download import download_miniimagenet

        download_miniimagenet(root, [split])  # learn2learn 0.2.0's own links fail (see download.py)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # learn2learn prints chatter
            loaded = l2l.vision.datasets.MiniImagenet(root=str(root), mode=split, download=False)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError, OSError) as err:
        hint = miniimagenet_help(root) if path.is_file() else f"the download failed; {miniimagenet_help(root)}"
        raise DataError(f"{path}: not a readable mini-ImageNet cache ({type(err).__name__}: {err}); delete it "
                        f"and {hint}") from None
    if tuple(loaded.x.shape[1:]) != IMAGE_SHAPE:
        raise DataError(f"{path}: images have shape {tuple(loaded.x.shape[1:])} after learn2learn's transpose, "
                        f"expected {IMAGE_SHAPE} (image_data must be [N, 84, 84, 3] uint8)")
    images = loaded.x.to(torch.uint8).contiguous()
    labels = [int(y) for y in loaded.y]
    return MiniImagenetImages(images, labels)


def miniimagenet_splits(cfg: RunConfig) -> dict[str, MiniImagenetImages]:
    """The three class-disjoint splits of the learn2learn files in ``cfg.data_root``."""
    return {split: load_split(Path(cfg.data_root), split, cfg.miniimagenet.download) for split in SPLITS}


class MiniImagenet(DataSource):
    """Colour 84x84 images in the three fixed class splits."""

    name = "miniimagenet"
    section = "miniimagenet"
    files_per_split = True

    def splits(self, cfg: RunConfig) -> tuple[dict[str, MiniImagenetImages], None]:
        return miniimagenet_splits(cfg), None

    def input_shape(self, cfg: RunConfig, channels: int | None = None) -> tuple[int, ...]:
        return IMAGE_SHAPE


register(MiniImagenet())
