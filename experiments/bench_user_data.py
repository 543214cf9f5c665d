"""How ``dataset: folder`` scales (metacompare.data.index, metacompare.data.folder): index time and peak
memory for 10,000 and 100,000 tiny image files generated in a temporary folder, and the task-sampling
rate of the folder path against the built-in Omniglot loader on the same images (images_background_small1,
unpacked into the temporary folder).

Index: wall and CPU seconds of ``index_folder`` (a listing and a stat per file; no image is opened),
then its peak Python allocation under ``tracemalloc`` in a second pass (tracemalloc slows the pass it
watches, so the two are measured apart). Sampling: 5-way 1-shot tasks with 15 queries (80 images) from
the test split of the same characters, the built-in loader holding every image decoded in memory, the
folder decoding lazily: a cold pass (empty cache) and a warm one (every image cached). CPU time of this
process, one torch thread; each figure is the best of ``--repeats``.

    OMP_NUM_THREADS=1 PYTHONPATH=. python experiments/bench_user_data.py
"""

from __future__ import annotations

import argparse
import io
import resource
import tempfile
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from metacompare.config.loading import expand
from metacompare.data import TaskSampler, load_omniglot, omniglot_splits, stream_seed
from metacompare.data.folder import FolderImages
from metacompare.data.index import index_folder

OMNIGLOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "omniglot"


def make_files(root: Path, count: int, per_class: int = 100) -> None:
    """``count`` 8x8 PNGs, ``per_class`` to a class folder; eight distinct images reused (the index reads no bytes)."""
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(8):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(buffer, format="PNG")
        blobs.append(buffer.getvalue())
    for c in range(count // per_class):
        folder = root / f"class{c:05d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            (folder / f"{i:03d}.png").write_bytes(blobs[(c + i) % 8])


def time_index(root: Path, repeats: int) -> tuple[float, float, float, int]:
    """(best wall s, best CPU s, peak MiB allocated by Python, files)."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        index = index_folder(root)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    del index
    tracemalloc.start()
    index = index_folder(root)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return min(walls), min(cpus), peak / 2**20, len(index.files)


def sampling_rate(sampler: TaskSampler, tasks: int) -> float:
    start = time.process_time()
    for _ in range(tasks):
        sampler.sample()
    return tasks / (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="files to index")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=200, help="tasks per sampling pass")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench_user_data_") as temporary:
        temporary = Path(temporary)
        print("index (listing + stat per file, no image opened):")
        print(f"  {'files':>8} {'wall s':>8} {'CPU s':>8} {'peak MiB':>9} {'µs/file':>8} {'bytes/file':>10}")
        rows = []
        for size in args.sizes:
            root = temporary / f"files{size}"
            make_files(root, size)
            wall, cpu, peak, files = time_index(root, args.repeats)
            rows.append((files, wall, peak))
            print(f"  {files:>8} {wall:>8.3f} {cpu:>8.3f} {peak:>9.1f} {1e6 * wall / files:>8.1f} "
                  f"{peak * 2**20 / files:>10.0f}")
        if len(rows) > 1:
            (n0, w0, p0), (n1, w1, p1) = rows[0], rows[-1]
            print(f"  {n1 // n0}x the files: {w1 / w0:.1f}x the time, {p1 / p0:.1f}x the peak memory")
        print(f"  process peak RSS so far: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
        sampling(temporary, args)


def sampling(temporary: Path, args) -> None:
    archive = OMNIGLOT / "images_background_small1.zip"
    if not archive.is_file():
        print(f"sampling: skipped, {archive} not found")
        return
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(temporary)
    root = temporary / "images_background_small1"
    cfg = expand({"dataset": "omniglot", "data_root": str(OMNIGLOT), "model": "conv4", "ways": 5, "shots": 1,
                  "query": 15, "omniglot": {"sources": ["images_background_small1"], "split": "characters",
                                            "train_characters": 100, "validation_characters": 0,
                                            "rotations": False, "download": False}})[0]
    start = time.process_time()
    builtin_test = omniglot_splits(cfg)["test"]
    builtin_load = time.process_time() - start
    characters = load_omniglot(str(OMNIGLOT), ("images_background_small1",), 28)
    wanted = sorted(f"{alphabet}/{character}" for _, alphabet, character in _test_keys(cfg, characters))
    number = {name: i for i, name in enumerate(wanted)}  # the same characters, drawings and tensors
    index = index_folder(root)
    files = [f for f, label in zip(index.files, index.labels) if index.classes[label] in number]
    labels = [number[index.classes[label]] for label in index.labels if index.classes[label] in number]

    def folder(cache_mb: float) -> FolderImages:
        return FolderImages(root, files, labels, 1, 28, invert=True, cache_mb=cache_mb)

    warm = folder(256)
    for i in range(len(warm)):
        warm[i]
    variants = {"built-in (in memory)": lambda: builtin_test, "folder, no cache": lambda: folder(0),
                "folder, warm cache": lambda: warm}
    print(f"task sampling, 5-way 1-shot 15-query, the {len(number)} test characters of small1 "
          f"({len(files)} images; CPU time, best of {args.repeats}):")
    rates = {name: max(sampling_rate(TaskSampler(make(), cfg, -1, stream_seed(0, "bench"), "test", 1, 15), args.tasks)
                       for _ in range(args.repeats)) for name, make in variants.items()}
    base = rates["built-in (in memory)"]
    for name, rate in rates.items():
        print(f"  {name:<22} {rate:>8.1f} tasks/s  {rate / base:>5.2f}x the built-in")
    print(f"  (the built-in loader first decodes the whole zip: {builtin_load:.1f} CPU s; the folder decodes on use)")


def _test_keys(cfg, characters):
    """The built-in loader's test characters for ``cfg`` (its character split, seed 0)."""
    from metacompare.data.omniglot import _character_split

    return _character_split(characters, cfg.omniglot)["test"]


if __name__ == "__main__":
    main()
