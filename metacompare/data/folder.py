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
from metacompare.errors import DataError
from metacompare.data.labelled import Labelled

GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
T = TypeVar("T")


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
