"""Images of a folder, decoded lazily with a bounded cache (``dataset: folder``).

An item is decoded on first use (Pillow: convert to grey ``L`` or ``RGB``, resize to ``size`` x
``size`` with Lanczos, as the Omniglot loader does) and kept, as the float32 tensor it returns, in a
least-recently-used cache of at most ``cache_mb`` megabytes, so memory is bounded by the cache and the index, not the folder.
Pixels are scaled to [0, 1]; ``invert`` takes ``1 - pixel`` (ink = 1, the Omniglot convention), so the
same characters give the very tensors of :func:`metacompare.data.load_omniglot`.
A file whose bytes Pillow cannot decode stops the run with its name (progress is checkpointed);
``metacompare inspect --verify`` finds every such file beforehand.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import torch
from PIL import Image

from metacompare import paths
from metacompare.data.index import FolderIndex, index_folder
from metacompare.data.labelled import Labelled
from metacompare.data.source import register
from metacompare.data.user import Source, UserSource, members
from metacompare.errors import DataError
from metacompare.config.runconfig import RunConfig

GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
T = TypeVar("T")
PROBE_FILES = 16  # image headers read to tell grey from colour


def unreadable(path: Path, err: Exception, root: Path) -> DataError:
    return DataError(f"{path}: not a readable image ({type(err).__name__}: {str(err)[:120]}); delete or replace "
                     f"it (`metacompare inspect {root} --verify` lists every such file)")


def _with_image(path: Path, root: Path, action: Callable[[Image.Image], T]) -> T:
    """``action`` on the Pillow image of ``path``, opened through :func:`metacompare.paths.open_regular`
    (a FIFO or device named like an image is refused, never waited on); every failure is a DataError."""
    handle = paths.open_data(path, f"replace it with an image file or move it out of {root}")
    try:
        with handle, Image.open(handle) as image:
            return action(image)
    except DECODE_ERRORS as err:
        raise unreadable(path, err, root) from None


def decode(path: Path, channels: int, size: int, root: Path) -> np.ndarray:
    """One image as uint8 ``[C, size, size]``."""
    image = _with_image(path, root, lambda im: im.convert("L" if channels == 1 else "RGB")
                        .resize((size, size), Image.LANCZOS))
    pixels = np.asarray(image)
    return pixels[None] if channels == 1 else np.ascontiguousarray(pixels.transpose(2, 0, 1))


def header(path: Path, root: Path) -> tuple[str, tuple[int, int]]:
    """(mode, (width, height)) from the file's header only: Pillow does not decode the pixels here."""
    return _with_image(path, root, lambda im: (im.mode, im.size))


def verify(path: Path, root: Path) -> None:
    """Decode the whole file (``inspect --verify``): truncated or corrupt data raises."""
    _with_image(path, root, lambda im: im.load())


class FolderImages(Labelled):
    """Some classes of a folder index; ``labels`` are 0..n-1 within this split."""

    def __init__(self, root: Path, files: list[str], labels: list[int], channels: int, size: int,
                 invert: bool, cache_mb: float):
        super().__init__(labels)
        self.root, self.files = Path(root), files
        self.channels, self.size, self.invert = channels, size, invert
        self.capacity = int(cache_mb * 2**20 // (4 * channels * size * size))  # float32 tensors
        self.cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        cached = self.cache.get(index)
        if cached is not None:
            self.cache.move_to_end(index)
            return cached, self.labels[index]
        pixels = decode(self.root / self.files[index], self.channels, self.size, self.root)
        x = torch.from_numpy(np.asarray(pixels, dtype=np.float32) / 255.0)
        x = 1.0 - x if self.invert else x
        if self.capacity > 0:
            self.cache[index] = x
            if len(self.cache) > self.capacity:
                self.cache.popitem(last=False)
        return x, self.labels[index]


def image_shape(cfg: RunConfig, index: FolderIndex | None = None) -> tuple[int, int]:
    """(channels, size) of a folder's images: configured, or detected from a few files' headers."""
    ud = cfg.user_data
    channels = ud.channels
    if channels == 0:
        index = index or index_folder(ud.root)
        modes = {mode for mode, _ in _probe(index)}
        channels = 1 if modes <= GREY_MODES else 3
    return channels, image_size(cfg, channels)


def _probe(index: FolderIndex) -> list[tuple[str, tuple[int, int]]]:
    """(mode, size) of a few images spread over the folder, read from their headers."""
    step = max(1, len(index.files) // PROBE_FILES)
    return [header(index.root / name, index.root) for name in index.files[::step][:PROBE_FILES]]


def image_size(cfg: RunConfig, channels: int) -> int:
    """The side images are resized to: configured, or Omniglot's 28 (grey) and mini-ImageNet's 84 (colour)."""
    return cfg.user_data.image_size or (28 if channels == 1 else 84)


class Folder(UserSource):
    """A folder of images, ``ROOT/<class>/`` or ``ROOT/<group>/<class>/``, grey or colour."""

    name = "folder"
    size_field = "user_data.image_size"
    holds = "image folder"
    label_column = False

    def read(self, cfg: RunConfig, path: Path) -> Source:
        index = index_folder(path)
        return Source("folder", path, index.classes, index.groups, index.labels, index.digest, index)

    def input_shape(self, cfg: RunConfig, channels: int | None = None) -> tuple[int, ...]:
        if channels:
            size = image_size(cfg, channels)
        else:
            channels, size = image_shape(cfg)
        return channels, size, size

    def possible_shapes(self, cfg: RunConfig) -> list[tuple[int, ...]]:
        channels = cfg.user_data.channels
        return [self.input_shape(cfg, c) for c in ((channels,) if channels else (1, 3))]

    def digest(self, root: Path) -> str:
        return index_folder(root).digest

    def prepare(self, cfg: RunConfig, source: Source, train: list[int]) -> tuple[int, int]:
        return image_shape(cfg, source.payload)

    def dataset(self, cfg: RunConfig, source: Source, chosen: list[int], prepared: tuple[int, int]) -> FolderImages:
        indices, labels = members(source.labels, chosen)
        ud = cfg.user_data
        channels, size = prepared
        return FolderImages(source.path, [source.payload.files[i] for i in indices], labels, channels, size,
                            ud.invert, ud.cache_mb)

    def recorded(self, prepared: tuple[int, int]) -> dict:
        return {"image": {"channels": prepared[0], "size": prepared[1]}}

    def channels(self, cfg: RunConfig, source: Source) -> int:
        return image_shape(cfg, source.payload)[0]

    def network_for(self, algorithm: str, channels: int) -> dict:
        """Nichol et al.'s network for Reptile, Finn et al.'s for the others; 32 filters on colour."""
        return {"model": "conv4_nichol" if algorithm == "reptile" else "conv4_finn",
                **({"filters": 32} if channels == 3 else {})}

    def payload_lines(self, cfg: RunConfig, source: Source, verify: bool) -> list[str]:
        index = source.payload
        sampled = _probe(index)
        sizes = sorted({size for _, size in sampled})
        channels, size = image_shape(cfg, index)
        lines = [f"  images ({len(sampled)} headers read): sizes {', '.join(f'{w}x{h}' for w, h in sizes[:4])}"
                 f"{' ...' if len(sizes) > 4 else ''}; modes {', '.join(sorted({m for m, _ in sampled}))} -> "
                 f"{'grey' if channels == 1 else 'colour'}, resized to {size}x{size}"
                 + (f"; {index.ignored} hidden/system files left out" if index.ignored else "")]
        return lines + (_verified(index) if verify else [])


def _verified(index: FolderIndex) -> list[str]:
    """Decode every image (``inspect --verify``); a DataError names the unreadable ones."""
    bad = []
    for name in index.files:
        try:
            verify(index.root / name, index.root)
        except DataError as err:
            bad.append(str(err))
    if bad:
        raise DataError(f"{len(bad)} of {len(index.files)} images are unreadable; the first: {bad[0]}")
    return [f"  verified: all {len(index.files)} images decode"]


register(Folder())
