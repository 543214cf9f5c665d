"""Inputs that cannot hang or leak: one test (or a few) per class of bad data input, each named after
the class it guards (see docs/reliability.md, "Inputs that cannot hang or leak").

1. A special file (FIFO, socket, device, folder) named like a data file never blocks a command: it is
   refused with one line naming it (``metacompare.paths.open_regular`` / ``paths.problem``).
2. A table whose header repeats a column name is refused (``metacompare.data.table.check_names``).
3. A network that cannot take the data's image size is refused by one rule for every dataset
   (``metacompare.models.refusal``), never a traceback.
4. Paths beyond the system's limits are one line, exit status 2 (``paths.too_long``, ``validation``).
5. A dangling symbolic link is reported as one, wherever it stands (``paths.dangling``).

A command that would block is stopped by SIGALRM (in-process) or a subprocess timeout, so a
regression fails instead of hanging the suite.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from metacompare import paths
from metacompare.config.loading import expand
from metacompare.data.table import read_frame
from metacompare.errors import ConfigError, DataError, UserError
from metacompare.models import build_model, input_shape
from tests.faults import CHILD_ENV, ROOT, cli

HANG_SECONDS = 120  # far above any of these commands' time, even on a loaded two-core host


@contextmanager
def no_hang(seconds: int = HANG_SECONDS):
    """Fail (instead of hanging the suite) if the body blocks, e.g. opening a FIFO for reading."""
    def stop(signum, frame):
        raise TimeoutError(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def one_line(capsys, *argv) -> str:
    """Run the CLI in-process under :func:`no_hang`; it must exit 2 with one ``metacompare: error:`` line."""
    with no_hang():
        code, out, err = cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("metacompare: error: "), (code, out, err)
    return lines[0]


def image_folder(root: Path, classes: int = 12, per_class: int = 4, size: int = 10, colour: bool = False) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c:02d}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (size, size, 3) if colour else (size, size)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / f"c{c:02d}" / f"{i}.png")
    return root


def table(path: Path, columns: list[str], rows: int = 24) -> Path:
    """A table with the given header (names may repeat) and numeric features, 6 classes."""
    values = [[(r + j) % 7 if name.strip() not in ("label", "text") else f"k{r % 6}" for j, name in enumerate(columns)]
              for r in range(rows)]
    values = [[v if name.strip() != "text" else f"words about topic {v} here" for v, name in zip(row, columns)]
              for row in values]
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        arrays = [pa.array([row[j] for row in values]) for j in range(len(columns))]
        pq.write_table(pa.Table.from_arrays(arrays, names=columns), path)
    else:
        sep = "\t" if path.suffix == ".tsv" else ","
        path.write_text("\n".join(sep.join(map(str, line)) for line in [columns, *values]) + "\n")
    return path


# ------------------------------------------------------------ 1. special files never block a command
def _special(kind: str, path: Path) -> None:
    """Put a ``kind`` of non-regular file at ``path``."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":  # AF_UNIX paths are short: bind relative to the folder
        here = os.getcwd()
        os.chdir(path.parent)
        try:
            socket.socket(socket.AF_UNIX).bind(path.name)
        finally:
            os.chdir(here)
    elif kind == "device":
        os.symlink(os.devnull, path)  # a character device, reached through a link
    else:
        path.mkdir()


@pytest.mark.parametrize("kind, says", [("fifo", "is a FIFO (named pipe), not a regular file"),
                                         ("socket", "is a socket"), ("device", "is a character device")])
def test_special_file_in_an_image_folder_is_refused_not_waited_on(tmp_path, capsys, kind, says):
    """Class: a special file in a data folder hangs every command. Named like an image, it is refused
    by inspect, inspect --verify and run --data with one line naming it, before any training."""
    root = image_folder(tmp_path / "data")
    _special(kind, root / "c00" / "0a.png")  # sorts among the images: 0.png, 0a.png, 1.png
    for argv in (("inspect", root), ("inspect", root, "--verify"),
                 ("run", "--data", root, "--results-dir", tmp_path / "results", "--no-progress")):
        line = one_line(capsys, *argv)
        assert "c00/0a.png" in line and says in line, line
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.pt"))


def test_folder_named_like_an_image_is_refused(tmp_path, capsys):
    """Class: special files in a data folder. A folder named ``x.png`` among the images is a layout
    error, not a file to open."""
    root = image_folder(tmp_path / "data")
    _special("folder", root / "c03" / "x.png")
    assert "holds both images and subfolders" in one_line(capsys, "inspect", root)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_special_file_named_like_a_table_is_refused_not_waited_on(tmp_path, capsys, suffix):
    """Class: special files. A FIFO given as a table (or as a config file) is refused at once."""
    fifo = tmp_path / f"rows{suffix}"
    os.mkfifo(fifo)
    for argv in (("inspect", fifo), ("run", "--data", fifo, "--results-dir", tmp_path / "r", "--no-progress")):
        assert f"rows{suffix}: is a FIFO (named pipe)" in one_line(capsys, *argv)
    config = tmp_path / "config.yaml"
    os.mkfifo(config)
    line = one_line(capsys, "run", config)
    assert "config.yaml" in line and "is a FIFO (named pipe)" in line, line


def test_special_files_in_builtin_datasets_and_lake_runs_are_refused(tmp_path):
    """Class: special files. The loaders of Omniglot (unpacked or zip), MNIST, mini-ImageNet and Lake's
    runs refuse a FIFO where a data file should be, instead of blocking on it."""
    from metacompare.data.omniglot import _source_entries
    from metacompare.data.digits import load_mnist
    from metacompare.data.lake_runs import read_run
    from metacompare.data.miniimagenet import load_split

    unpacked = tmp_path / "omni" / "images_background" / "Alpha" / "ch1"
    unpacked.mkdir(parents=True)
    os.mkfifo(unpacked / "01.png")
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    os.mkfifo(zipped / "images_background.zip")
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        os.mkfifo(raw / name)
    os.mkfifo(tmp_path / "mini-imagenet-cache-train.pkl")
    run = tmp_path / "run01"
    (run / "training").mkdir(parents=True)
    (run / "test").mkdir()
    for i in range(1, 21):
        Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(run / "training" / f"class{i:02d}.png")
    os.mkfifo(run / "class_labels.txt")
    cases = [(lambda: _source_entries(tmp_path / "omni", "images_background"), "01.png"),
             (lambda: _source_entries(zipped, "images_background"), "images_background.zip"),
             (lambda: load_mnist(str(tmp_path / "mnist"), False), "train-images-idx3-ubyte"),
             (lambda: load_split(tmp_path, "train"), "mini-imagenet-cache-train.pkl"),
             (lambda: read_run(run, 8), "class_labels.txt")]
    for load, name in cases:
        with no_hang(), pytest.raises(UserError, match=rf"{name}.*FIFO \(named pipe\), not a regular file"):
            load()


@pytest.mark.slow  # a fresh interpreter imports torch: 10-40 s on a loaded two-core host
def test_a_fifo_in_a_data_folder_cannot_hang_the_command_line(tmp_path):
    """Class: special files, end to end in a child process with a timeout: inspect, inspect --verify
    and run --data each exit 2 naming the FIFO (the default suite runs the same in-process, under
    SIGALRM)."""
    root = image_folder(tmp_path / "data")
    os.mkfifo(root / "c05" / "2.5.png")
    script = ("import sys\nfrom metacompare.cli import main\n"
              "codes = [main(a) for a in ([\"inspect\", sys.argv[1]], [\"inspect\", sys.argv[1], \"--verify\"],"
              " [\"run\", \"--data\", sys.argv[1], \"--results-dir\", sys.argv[2], \"--no-progress\"])]\n"
              "print(codes)\n")
    done = subprocess.run([sys.executable, "-c", script, str(root), str(tmp_path / "results")], capture_output=True,
                          text=True, cwd=ROOT, env=CHILD_ENV, timeout=300)
    assert done.stdout.strip() == "[2, 2, 2]", (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 3 and all("c05/2.5.png: is a FIFO (named pipe)" in line for line in lines), lines


def test_open_regular_refuses_what_is_not_a_regular_file(tmp_path):
    """Class: special files, at the one opening function: a FIFO, a device, a folder raise
    SpecialFile (an OSError) at once; a regular file reads."""
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_bytes(b"abc")
    for name in ("pipe", "dir"):
        with no_hang(), pytest.raises(paths.SpecialFile):
            paths.open_regular(tmp_path / name)
    with pytest.raises(paths.SpecialFile, match="character device"):
        paths.open_regular(os.devnull)
    assert paths.read_bytes(tmp_path / "file") == b"abc"


# ------------------------------------------------------------- 2. a repeated column name never leaks
REPEATS = {"label twice": ["x1", "x2", "label", "label"], "feature twice": ["x1", "x1", "label"],
           "label and ' label'": ["x1", "label", " label"], "feature and 'x1 '": ["x1", "x1 ", "label"],
           "label and 'LABEL'": ["x1", "label", "LABEL"], "composed and decomposed": ["caf\u00e9", "label", "cafe\u0301"]}


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".txt", ".parquet"])
@pytest.mark.parametrize("case", sorted(REPEATS))
def test_table_with_a_repeated_column_name_is_refused(tmp_path, capsys, suffix, case):
    """Class: a table with a repeated column name leaks the label. Every table format the reader takes
    refuses a header that names a column twice (or twice but for surrounding spaces, case or Unicode
    form), naming the file and the name, through inspect, run --data and the loader itself."""
    path = table(tmp_path / f"rows{suffix}", REPEATS[case])
    repeated = REPEATS[case][-1]
    for argv in (("inspect", path), ("run", "--data", path, "--results-dir", tmp_path / "r", "--no-progress")):
        line = one_line(capsys, *argv)
        assert f"rows{suffix}" in line and f"'{repeated}'" in line and "rename or drop" in line, line
    with pytest.raises(DataError, match="the header"):
        read_frame(path)
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("*.pt"))


def test_text_table_with_a_repeated_text_column_is_refused(tmp_path, capsys):
    """Class: repeated column names, for dataset: text (the same reader)."""
    path = table(tmp_path / "texts.csv", ["text", "label", "text"])
    assert "repeats the column name 'text'" in one_line(capsys, "inspect", path, "--form", "text")


def test_distinct_names_still_read_and_label_dot_one_is_a_name(tmp_path):
    """Class: repeated column names; the control: a header whose names differ is read as before, and a
    column really named ``label.1`` is just a column (only the header as written counts)."""
    frame = read_frame(table(tmp_path / "ok.csv", ["x1", "label.1", "label"]))
    assert list(frame.columns) == ["x1", "label.1", "label"] and len(frame) == 24
    pd.DataFrame({"x": [1.0, 2.0], "label": ["a", "b"]}).to_parquet(tmp_path / "ok.parquet")
    assert list(read_frame(tmp_path / "ok.parquet").columns) == ["x", "label"]


# ------------------------------------------------ 3. one rule says whether a network takes the images
def _raw(dataset: str, model: str, size: int, channels: int = 1) -> dict:
    raw = {"dataset": dataset, "model": model, "ways": 2, "data_root": "unused",
           "resnet12": {"widths": [2, 2, 2, 2]} if model == "resnet12" else {}}
    if model.startswith("conv4"):  # the only networks that read filters (validation refuses it elsewhere)
        raw["filters"] = 2
    if dataset == "omniglot":
        raw["omniglot"] = {"image_size": size}
    if dataset == "folder":
        raw["user_data"] = {"root": "unused", "image_size": size, "channels": channels}
    return raw


COMBINATIONS = [(dataset, model, size, channels)
                for dataset, sizes, channel_counts in (("omniglot", (8, 12, 15, 16, 28), (1,)),
                                                       ("folder", (8, 12, 16, 84), (1, 3)),
                                                       ("miniimagenet", (0,), (3,)), ("digits", (0,), (1,)))
                for model in ("conv4", "conv4_strided", "conv4_finn", "conv4_nichol", "resnet12", "metamodel")
                for size in sizes for channels in channel_counts]


@pytest.mark.parametrize("dataset, model, size, channels", COMBINATIONS)
def test_network_and_image_size_are_refused_or_run_never_crash(dataset, model, size, channels):
    """Class: a network that cannot take the image size is refused for one dataset and crashes for
    another. For every dataset, model and size: the config is refused with one line naming the size
    field (or the model) and the smallest size that fits, or the built network runs on the images."""
    try:
        cfg = expand(_raw(dataset, model, size, channels), source="test")[0]
    except ConfigError as err:
        message = str(err)
        assert "\n" not in message and f"{model} needs at least 16 pixels per side" in message, message
        field = {"omniglot": "omniglot.image_size", "folder": "user_data.image_size"}[dataset]
        assert message.startswith(f"test: {field}: ") and f"raise {field} to 16" in message, message
        return
    shape = input_shape(cfg)
    with torch.no_grad():
        out = build_model(cfg)(torch.zeros(3, *shape))
    assert out.shape == (3, 2)
    if dataset == "digits":
        assert shape == (1, 28, 28)


def test_folder_with_detected_colour_is_refused_when_the_network_is_built(tmp_path, capsys):
    """Class: network and image size. Where the channels are detected from the images (grey would fit,
    colour does not), the same rule reads a few images' headers before anything runs, and refuses in
    one line through the command line."""
    root = image_folder(tmp_path / "colour", colour=True)
    config = tmp_path / "run.yaml"
    config.write_text(f"dataset: folder\nmodel: conv4_finn\nways: 3\nshots: 1\nquery: 1\ntest_query: 1\nfilters: 2\n"
                      f"iterations: 1\n"
                      f"eval_episodes: 1\ntest_episodes: 1\nresults_dir: {tmp_path / 'results'}\n"
                      f"user_data: {{root: {root}, image_size: 8, validation_fraction: 0.25, test_fraction: 0.25}}\n")
    line = one_line(capsys, "run", config, "--no-progress")
    assert "user_data.image_size: conv4_finn needs at least 16 pixels per side" in line, line
    assert not any((tmp_path / "results").rglob("*.pt"))


# --------------------------------------------------------- 4. paths beyond the system's limits
def test_paths_beyond_the_system_limits_are_one_line(tmp_path, capsys, monkeypatch):
    """Class: paths beyond the OS limits give tracebacks. A name over NAME_MAX bytes or a path over
    PATH_MAX as the data, the results folder, the experiment name or the data root is one line naming
    the limit, exit status 2."""
    monkeypatch.chdir(tmp_path)
    long_name = "n" * 300
    long_path = "/".join(["d" * 200] * 25)  # 5,000 bytes
    sine = tmp_path / "sine.yaml"
    sine.write_text("dataset: sine\nmodel: mlp\nways: 1\niterations: 1\neval_episodes: 1\ntest_episodes: 1\n")
    cases = [(("inspect", long_name), "300 bytes long, over the system's limit of 255"),
             (("inspect", long_path), "over the system's limit of 4,095"),
             (("run", "--data", long_name), "300 bytes long"),
             (("run", sine, "--set", f"experiment={long_name}"), "experiment: "),
             (("run", sine, "--results-dir", long_path), "results_dir: "),
             (("run", sine, "--results-dir", tmp_path / long_name), "results_dir: "),
             (("run", sine, "--set", f"experiment={'e' * 250}", "--results-dir", tmp_path / "r"), None),
             (("report", long_name), "300 bytes long")]
    for argv, needle in cases:
        if needle is None:  # within the limits, the longest names still run
            with no_hang():
                assert cli(capsys, *argv, "--no-progress")[0] == 0
            continue
        line = one_line(capsys, *argv)
        assert needle in line and len(line) < 600, line
    with pytest.raises(ConfigError, match="data_root: the name"):
        expand({"dataset": "omniglot", "model": "conv4", "data_root": long_name}, source="test")


def test_experiment_named_after_long_data_fits_a_folder_name(tmp_path):
    """Class: path limits. ``--data`` on a folder whose name is near the limit gives an experiment
    name that leaves room for ``_compare_<budget>``, and two such folders still get two names."""
    from metacompare.workflows.data_defaults import experiment_name

    names = {experiment_name(tmp_path / ("x" * 250 + tail), "folder") for tail in ("a", "b")}
    assert len(names) == 2 and all(len(f"{name}_compare_cpu3600s") <= 255 for name in names)
    assert experiment_name(tmp_path / "digits.csv", "table") == "table_digits"


# -------------------------------------------------------------- 5. dangling links say what they are
def test_dangling_symlinks_are_reported_as_dangling(tmp_path, capsys, monkeypatch):
    """Class: a dangling symlink reported as "permission denied" or "file exists". As the data path, a
    table, an image in a data folder, the results folder (and a folder above it) and a download
    folder, a link to nothing is named as such in one line."""
    monkeypatch.chdir(tmp_path)
    for name in ("gone", "gone.csv", "results", "parent", "weights.pt"):
        os.symlink(tmp_path / "nowhere" / name, name)
    root = image_folder(tmp_path / "data")
    os.symlink(tmp_path / "nowhere.png", root / "c01" / "5.png")
    classes = image_folder(tmp_path / "classes")
    os.symlink(tmp_path / "nowhere", classes / "c99")
    (tmp_path / "r" / "exp").mkdir(parents=True)
    os.symlink(tmp_path / "nowhere", tmp_path / "r" / "sine")
    sine = tmp_path / "sine.yaml"
    sine.write_text("experiment: sine\ndataset: sine\nmodel: mlp\nways: 1\niterations: 1\neval_episodes: 1\n"
                    "test_episodes: 1\n")
    cases = [("inspect", "gone"), ("inspect", "gone.csv"), ("run", "--data", "gone"), ("inspect", root),
             ("inspect", classes), ("run", sine, "--results-dir", "results"),
             ("run", sine, "--results-dir", "parent/inner"), ("run", sine, "--results-dir", tmp_path / "r"),
             ("download", "omniglot", "--root", "parent/data"), ("evaluate", "weights.pt", "--lake-runs", "x")]
    for argv in cases:
        line = one_line(capsys, *argv)
        assert "a symbolic link to" in line and "which does not exist" in line, line
        assert "permission denied" not in line and "File exists" not in line, line
    with pytest.raises(DataError, match="data_root: .* a symbolic link to .*which does not exist"):
        from metacompare.data import omniglot_splits

        omniglot_splits(expand({"dataset": "omniglot", "model": "conv4", "data_root": str(tmp_path / "gone"),
                                "results_dir": str(tmp_path / "r")})[0])
