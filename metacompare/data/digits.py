"""Handwritten-digit task datasets: MNIST (the tutorial article's experiment) and scikit-learn's offline digits.

- ``mnist``: the 70,000 28x28 images of LeCun et al.'s MNIST (training and test files together),
  read by ``torchvision.datasets.MNIST`` from ``<data_root>/MNIST/raw``; with ``digits.download``
  the four IDX files are fetched and MD5-checked first (:func:`metacompare.data.download.download_mnist`).
- ``digits``: the 1,797 8x8 digits that scikit-learn ships (``sklearn.datasets.load_digits``, the
  UCI optical-recognition set), upsampled bilinearly to 28x28, so the experiment runs offline.

Tasks are N-way K-shot over digit classes, sampled by ``metacompare.data.TaskSampler`` (learn2learn
``NWays`` / ``KShots``, labels permuted per task). The ten digits are split into meta-training,
(optional) validation and meta-test classes by ``cfg.digits``; with no validation digits, validation
episodes come from the training digits, drawn from their own ``eval_seed`` stream.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from metacompare import paths
from metacompare.data.source import DataSource, register
from metacompare.errors import ConfigError, DataError
from metacompare.config.runconfig import RunConfig

IMAGE_SIZE = 28  # MNIST's size; the tutorial's MetaModel takes 28*28 inputs


class DigitImages(Dataset):
    """The images of some digits; label ``i`` is ``classes[i]``, so a split's labels are 0..n-1.

    Images are kept as uint8 (MNIST's 70,000 fit in 55 MB) and scaled to [0, 1] on access, ink = 1.
    """

    def __init__(self, images: torch.Tensor, digits: torch.Tensor, classes: tuple[int, ...]):
        keep = torch.isin(digits, torch.tensor(classes, dtype=digits.dtype))
        self.images = images[keep]
        relabel = {digit: label for label, digit in enumerate(classes)}
        self.labels = [relabel[int(d)] for d in digits[keep]]
        self.classes = classes
        self.labels_to_indices: dict[int, list[int]] = {}
        for i, label in enumerate(self.labels):
            self.labels_to_indices.setdefault(label, []).append(i)
        self.indices_to_labels = dict(enumerate(self.labels))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index][None].float() / 255.0, self.labels[index]


@functools.lru_cache(maxsize=1)
def load_sklearn_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled digits as ``[1797, 28, 28]`` uint8 images (ink 255) and their digits."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = torch.from_numpy(bunch.images).float()[:, None] / 16.0  # pixel values are 0..16
    large = F.interpolate(small, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    return (large[:, 0].clamp(0, 1) * 255).round().to(torch.uint8), torch.from_numpy(bunch.target)


@functools.lru_cache(maxsize=2)
def load_mnist(root: str, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST's training and test files together: ``[70000, 28, 28]`` uint8 images and their digits."""
    from torchvision.datasets import MNIST

    from metacompare.data.download import MNIST_FILES, download_mnist

    raw = Path(root) / "MNIST" / "raw"
    if download:
        download_mnist(Path(root))
    for name in (name.removesuffix(".gz") for name, _ in MNIST_FILES):
        reason = paths.problem(raw / name)  # a FIFO named like one would block the reader forever
        if reason == paths.NOTHING:
            raise DataError(f"mnist: {name} is not in {raw}; set digits.download: true, or unpack "
                            f"MNIST's four IDX files there")
        if reason:
            raise DataError(f"{raw / name}: {reason}; delete it, then set digits.download: true or unpack "
                            f"MNIST's IDX file there")
    try:
        parts = [MNIST(root, train=train, download=False) for train in (True, False)]
    except (RuntimeError, ValueError, TypeError, AssertionError, KeyError, OSError) as err:
        raise DataError(f"mnist: unreadable IDX file in {raw} ({type(err).__name__}: {err}); delete the "
                        f"folder and download again") from None
    if any(len(p.data) != len(p.targets) for p in parts):
        raise DataError(f"mnist: the image and label files in {raw} disagree in length; delete the folder "
                        f"and download again")
    return torch.cat([p.data for p in parts]), torch.cat([p.targets for p in parts])


def check_digit_split(cfg: RunConfig) -> None:
    """One-line ConfigError for an impossible class split: not digits, repeated, overlapping, too small."""
    split = {name: getattr(cfg.digits, f"{name}_classes") for name in ("train", "validation", "test")}
    for name, classes in split.items():
        field = f"digits.{name}_classes"
        bad = [c for c in classes if not 0 <= c <= 9]
        if bad:
            raise ConfigError(f"{field}: {bad} are not digits; use classes 0-9")
        if len(set(classes)) != len(classes):
            raise ConfigError(f"{field}: lists a digit twice ({list(classes)}); list each once")
        if (classes or name != "validation") and len(classes) < cfg.ways:
            raise ConfigError(f"{field}: {cfg.ways}-way tasks need at least {cfg.ways} digits, the split has "
                              f"{len(classes)} ({list(classes)}); lower ways or list more digits")
    for a, b in (("train", "test"), ("train", "validation"), ("validation", "test")):
        shared = sorted(set(split[a]) & set(split[b]))
        if shared:
            raise ConfigError(f"digits: {a}_classes and {b}_classes share {shared}; make the class lists "
                              f"disjoint (empty validation_classes validates on the training digits)")


def digit_splits(cfg: RunConfig, images: torch.Tensor, digits: torch.Tensor) -> dict[str, DigitImages]:
    """Class-disjoint train / validation / test datasets of ``images`` as ``cfg.digits`` splits them."""
    check_digit_split(cfg)
    dc = cfg.digits
    train = DigitImages(images, digits, dc.train_classes)
    validation = DigitImages(images, digits, dc.validation_classes) if dc.validation_classes else train
    return {"train": train, "validation": validation, "test": DigitImages(images, digits, dc.test_classes)}


class Digits(DataSource):
    """scikit-learn's 8x8 digits, upsampled to 28x28 grey images: offline."""

    name = "digits"
    section = "digits"

    def load_images(self, cfg: RunConfig) -> tuple[torch.Tensor, torch.Tensor]:
        return load_sklearn_digits()

    def splits(self, cfg: RunConfig) -> tuple[dict[str, DigitImages], None]:
        return digit_splits(cfg, *self.load_images(cfg)), None

    def input_shape(self, cfg: RunConfig, channels: int | None = None) -> tuple[int, ...]:
        return 1, IMAGE_SIZE, IMAGE_SIZE

    def check(self, cfg: RunConfig) -> None:
        super().check(cfg)
        check_digit_split(cfg)


class Mnist(Digits):
    """LeCun et al.'s MNIST from ``<data_root>/MNIST/raw`` (fetched first with ``digits.download``)."""

    name = "mnist"

    def load_images(self, cfg: RunConfig) -> tuple[torch.Tensor, torch.Tensor]:
        return load_mnist(cfg.data_root, cfg.digits.download)


register(Mnist())
register(Digits())
