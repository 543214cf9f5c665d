"""Lake's one-shot classification runs (Lake, Salakhutdinov & Tenenbaum 2015, Science) as tasks.

The Omniglot challenge's ``one-shot-classification/all_runs.zip`` holds 20 runs, each a 20-way,
within-alphabet, one-shot problem: ``runNN/training/classNN.png`` (one drawing of each of 20
characters), ``runNN/test/itemNN.png`` (20 new drawings) and ``runNN/class_labels.txt``, whose lines
pair a test item with its training class: ``run01/test/item01.png run01/training/class12.png``.
Each run is read as one :class:`~metacompare.data.Task` (support: the training images, query: the
test items); :mod:`metacompare.workflows.lake` scores a trained model on them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from metacompare import files, paths
from metacompare.data.tasks import Task
from metacompare.errors import DataError

WAYS = 20


def check_trained_on(dataset: str, path: str | Path) -> None:
    """Lake's runs are Omniglot characters: refuse a model trained on other data (``path``: its run)."""
    if dataset != "omniglot":
        raise DataError(f"{path}: trained on {dataset}; Lake's runs are Omniglot characters, so score "
                        f"a model trained with dataset: omniglot")


RUNS_HELP = ("unpack one-shot-classification/all_runs.zip of https://github.com/brendenlake/omniglot "
             "and pass the folder that holds run01 ... run20")


def load_image(path: Path, image_size: int) -> torch.Tensor:
    """``[1, S, S]`` with ink = 1: the same preprocessing as the Omniglot training data (metacompare.data)."""
    handle = paths.open_data(path, RUNS_HELP)  # a FIFO named like an image is refused, never waited on
    try:
        with handle, Image.open(handle) as opened:
            image = opened.convert("L").resize((image_size, image_size), Image.LANCZOS)
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: unreadable image ({err}); {RUNS_HELP}") from None
    return 1.0 - torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None]


def read_run(folder: Path, image_size: int) -> Task:
    """One run as a Task: the 20 training images (labels 0-19 by file order) and the 20 test items."""
    training = sorted((folder / "training").glob("class*.png"))
    labels_file = folder / "class_labels.txt"
    if len(training) != WAYS or not labels_file.exists():
        raise DataError(f"{folder}: expected {WAYS} training/classNN.png and class_labels.txt, found "
                        f"{len(training)} images{'' if labels_file.exists() else ' and no class_labels.txt'}; "
                        f"{RUNS_HELP}")
    label_of = {path.name: label for label, path in enumerate(training)}
    items, labels = [], []
    for number, line in enumerate(files.read_text(labels_file, RUNS_HELP).splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or Path(parts[1]).name not in label_of:
            raise DataError(f"{labels_file}, line {number}: expected 'runNN/test/itemNN.png "
                            f"runNN/training/classNN.png', got {line.strip()!r}")
        item = folder / "test" / Path(parts[0]).name
        reason = paths.problem(item)
        if reason:
            raise DataError(f"{labels_file}, line {number}: {item} {reason}; {RUNS_HELP}")
        items.append(load_image(item, image_size))
        labels.append(label_of[Path(parts[1]).name])
    if not items:
        raise DataError(f"{labels_file}: lists no test items; {RUNS_HELP}")
    support = torch.stack([load_image(p, image_size) for p in training])
    return Task(support, torch.arange(WAYS), torch.stack(items), torch.tensor(labels))


def read_runs(folder: str | Path, image_size: int) -> dict[str, Task]:
    folder = Path(folder)
    runs = sorted(d for d in folder.glob("run*") if d.is_dir() and re.fullmatch(r"run\d+", d.name))
    if not runs:
        raise DataError(f"{folder}: no runNN folders found; {RUNS_HELP}")
    return {run.name: read_run(run, image_size) for run in runs}
