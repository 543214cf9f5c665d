"""MNIST download and loading, against servers on 127.0.0.1 serving small generated files in the
real IDX format (gzip'd), with the mirror list and checksums pointed at them."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import pytest
import torch

from metacompare.data import download
from metacompare.config.loading import expand
from metacompare.data import DataError, build_tasks
from metacompare.data.digits import load_mnist
from metacompare.data.download import DownloadError, download_mnist
from tests.faults import cli, closed_port_url, file_server, leftovers, one_torch_thread, silent_server, write_config

one_thread = pytest.fixture(autouse=True)(one_torch_thread)

PER_DIGIT = {"train": 6, "t10k": 2}  # images of each digit in the generated training and test files


def idx_images(images: torch.Tensor) -> bytes:
    """IDX3: magic 0x00000803 (unsigned bytes, 3 dimensions), then the sizes as big-endian int32."""
    n, rows, cols = images.shape
    return struct.pack(">IIII", 0x803, n, rows, cols) + images.to(torch.uint8).numpy().tobytes()


def idx_labels(labels: torch.Tensor) -> bytes:
    return struct.pack(">II", 0x801, len(labels)) + labels.to(torch.uint8).numpy().tobytes()


def fake_mnist(folder: Path) -> dict[str, tuple[str, torch.Tensor, torch.Tensor]]:
    """The four gzip'd IDX files: digit d's k-th image is filled with the value 10*d + k."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for part, count in PER_DIGIT.items():
        labels = torch.arange(10).repeat(count)
        images = (10 * labels + torch.arange(len(labels)) // 10)[:, None, None].expand(-1, 28, 28)
        for kind, payload in (("images-idx3", idx_images(images)), ("labels-idx1", idx_labels(labels))):
            name = f"{part}-{kind}-ubyte.gz"
            blob = gzip.compress(payload, mtime=0)
            (folder / name).write_bytes(blob)
            files[name] = (hashlib.md5(blob).hexdigest(), images, labels)
    return files


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A server of the fake files; MNIST_FILES carries their MD5s (the real ones are torchvision's)."""
    files = fake_mnist(tmp_path / "server")
    assert {name for name, _ in download.MNIST_FILES} == set(files)
    monkeypatch.setattr(download, "MNIST_FILES", tuple((name, files[name][0]) for name, _ in download.MNIST_FILES))
    load_mnist.cache_clear()
    with file_server(tmp_path / "server") as url:
        yield url + "/"
    load_mnist.cache_clear()


def test_the_real_checksums_and_mirrors_are_torchvisions():
    from torchvision.datasets import MNIST

    assert download.MNIST_FILES == tuple(MNIST.resources) and download.MNIST_MIRRORS == tuple(MNIST.mirrors)
    assert dict(download.MNIST_FILES)["train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"


def test_download_unpacks_checks_and_torchvision_reads_it(tmp_path, served):
    root = tmp_path / "data"
    paths = download_mnist(root, mirrors=[served], timeout=5)
    raw = root / "MNIST" / "raw"
    assert [p.name for p in paths] == ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    assert all((raw / (p.name + ".gz")).is_file() for p in paths)  # kept, as torchvision keeps them
    assert leftovers(root) == [] and not list(raw.glob(".unpack-*"))
    images, digits = load_mnist(str(root), False)
    assert images.shape == (10 * 8, 28, 28) and images.dtype == torch.uint8
    assert torch.bincount(digits).tolist() == [8] * 10
    # training file first, then t10k: image i of the training file is 10 * digit + i // 10
    assert images[13, 5, 5] == 10 * 3 + 1 and digits[13] == 3 and images[60 + 4, 0, 0] == 40


def test_a_second_download_fetches_nothing(tmp_path, served):
    root = tmp_path / "data"
    download_mnist(root, mirrors=[served], timeout=5)
    before = {p: p.stat().st_mtime_ns for p in (root / "MNIST" / "raw").iterdir()}
    download_mnist(root, mirrors=[closed_port_url() + "/"], timeout=5)  # would fail if it tried
    assert {p: p.stat().st_mtime_ns for p in (root / "MNIST" / "raw").iterdir()} == before


def test_a_dead_mirror_falls_back_to_the_next(tmp_path, served):
    download_mnist(tmp_path / "data", mirrors=[closed_port_url() + "/", served], timeout=5)
    assert len(list((tmp_path / "data" / "MNIST" / "raw").glob("*-ubyte"))) == 4


def test_md5_mismatch_on_every_mirror_is_one_line_and_leaves_nothing(tmp_path, served, monkeypatch):
    monkeypatch.setattr(download, "MNIST_FILES", (("train-images-idx3-ubyte.gz", "0" * 32),))
    with pytest.raises(DownloadError) as caught:
        download_mnist(tmp_path / "data", mirrors=[served, served], timeout=5)
    message = str(caught.value)
    assert "train-images-idx3-ubyte.gz: MD5 mismatch" in message and "expected " + "0" * 32 in message
    assert "tried 2 mirror(s)" in message and "\n" not in message
    assert list((tmp_path / "data" / "MNIST" / "raw").iterdir()) == []


def test_a_hanging_mirror_times_out(tmp_path, served):
    with silent_server() as url, pytest.raises(DownloadError, match="download failed .*timed out"):
        download_mnist(tmp_path / "data", mirrors=[url + "/"], timeout=0.5)


def mnist_config(root: Path, **fields) -> dict:
    return dict(dataset="mnist", data_root=str(root), model="metamodel", algorithm="reptile", ways=3, shots=2,
                query=3, iterations=2, meta_batch_size=2, eval_interval=1, eval_episodes=2, test_episodes=3,
                eval_inner_steps=1, **fields)


def test_an_mnist_run_downloads_then_trains(tmp_path, served, monkeypatch, capsys):
    monkeypatch.setattr(download, "MNIST_MIRRORS", (closed_port_url() + "/", served))
    path = write_config(tmp_path / "cfg.yaml", mnist_config(tmp_path / "data"))
    code, _, err = cli(capsys, "run", str(path), "--results-dir", str(tmp_path / "r"), "--no-progress", "--no-report")
    assert code == 0, err
    tasks = build_tasks(expand(mnist_config(tmp_path / "data"))[0])
    for task in tasks.test:  # digits 5-9 by default: images filled with 50..79 (x 1/255)
        assert task.support_x.shape == (6, 1, 28, 28) and float(task.all_x.min()) * 255 >= 50 - 1e-4
    assert all(float(t.all_x.max()) * 255 <= 49 + 1e-4 for t in tasks.train_episodes)


def test_missing_mnist_without_download_is_one_line(tmp_path, capsys):
    load_mnist.cache_clear()
    path = write_config(tmp_path / "cfg.yaml", mnist_config(tmp_path / "data", digits={"download": False}))
    code, _, err = cli(capsys, "run", str(path), "--results-dir", str(tmp_path / "r"), "--no-progress")
    assert code == 2 and err.count("\n") == 1
    assert "mnist: train-images-idx3-ubyte is not in" in err and "digits.download: true" in err


def test_a_truncated_idx_file_is_one_line(tmp_path, served):
    root = tmp_path / "data"
    download_mnist(root, mirrors=[served], timeout=5)
    images = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])
    with pytest.raises(DataError, match="mnist: unreadable IDX file in .*delete the folder and download again"):
        load_mnist(str(root), False)
