"""Fetch the official Omniglot zips and MNIST's IDX files (checked against their published MD5s) and
learn2learn's mini-ImageNet caches (from the mirrors that still serve them).

MD5 sums and unpacking are torchvision's (``torchvision.datasets.utils``), and MNIST's mirrors and
checksums are those of ``torchvision.datasets.MNIST``. The transfer itself is :func:`fetch` rather
than torchvision's ``download_url``, which has no timeout (a stalled mirror would hang a run), writes
straight to the final name (a killed download would leave half a file) and always draws a progress bar.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterable, Sequence

from torchvision.datasets import MNIST
from torchvision.datasets.utils import calculate_md5, check_integrity, extract_archive
from tqdm import tqdm

from metacompare import paths
from metacompare.errors import UserError

OMNIGLOT_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
# The dataset repository's published checksums (also listed in shared/data/omniglot/README.md).
OMNIGLOT_MD5 = {
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
    # The two "minimal" background splits that configs/omniglot_minimal.yaml reads, as the same folder
    # of the dataset repository serves them.
    "images_background_small1": "e704a628b5459e08445c13499850abc4",
    "images_background_small2": "b75a71a51d3b13f821f212756fe481fd",
}
MNIST_MIRRORS: tuple[str, ...] = tuple(MNIST.mirrors)
MNIST_FILES: tuple[tuple[str, str], ...] = tuple(MNIST.resources)  # (gzip'd IDX file, its MD5)
# learn2learn's mini-ImageNet caches (mini-imagenet-cache-<split>.pkl): its maintainers' Zenodo record
# first, then its Dropbox links. learn2learn 0.2.0 itself tries Dropbox and then Google Drive, whose
# links break or answer with an HTML page (learn2learn issues 291, 341, 367); no MD5 is published, so a
# download is checked for being a pickle, and the loader checks its contents.
MINIIMAGENET_MIRRORS: dict[str, tuple[str, ...]] = {
    "train": ("https://zenodo.org/record/7978538/files/mini-imagenet-cache-train.pkl",
              "https://www.dropbox.com/s/9g8c6w345s2ek03/mini-imagenet-cache-train.pkl?dl=1"),
    "validation": ("https://zenodo.org/record/7978538/files/mini-imagenet-cache-validation.pkl",
                   "https://www.dropbox.com/s/ip1b7se3gij3r1b/mini-imagenet-cache-validation.pkl?dl=1"),
    "test": ("https://zenodo.org/record/7978538/files/mini-imagenet-cache-test.pkl",
             "https://www.dropbox.com/s/ye9jeb5tyz0x01b/mini-imagenet-cache-test.pkl?dl=1"),
}
PICKLE_PROTOCOL_2_PLUS = b"\x80"  # the PROTO opcode that starts every pickle of protocol 2 or later


class DownloadError(UserError):
    pass


def fetch(url: str, target: Path, expected_md5: str | None, timeout: float = 60.0,
          looks_right: Callable[[Path], str | None] | None = None) -> Path:
    """Download ``url`` to ``target`` via a temporary file; keep it only if its MD5 matches (when one is
    published) and ``looks_right(file)`` finds nothing wrong (it returns what is wrong, or None)."""
    if not timeout > 0:
        raise DownloadError(f"--timeout: must be a positive number of seconds, got {timeout}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        reason = paths.folder_problem(target.parent) or err.strerror
        raise DownloadError(f"--root: cannot create the folder {target.parent} ({reason}); "
                            f"choose another with --root") from None
    partial = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as handle:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name, leave=False,
                      disable=None) as bar:  # None: no bar when stderr is not a terminal (logs, CI)
                for block in iter(lambda: response.read(1 << 16), b""):
                    handle.write(block)
                    bar.update(len(block))
    except ValueError as err:  # urllib's "unknown url type"
        partial.unlink(missing_ok=True)
        raise DownloadError(f"--url: cannot fetch {url} ({err}); give an http(s):// address") from None
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, http.client.HTTPException) as err:
        partial.unlink(missing_ok=True)
        reason = getattr(err, "reason", err)
        if isinstance(err, urllib.error.HTTPError):
            reason = f"HTTP {err.code} {err.reason}"
        raise DownloadError(f"{url}: download failed ({reason}); check the network or fetch the file by "
                            f"hand into {target.parent}") from None
    except OSError as err:  # a full or read-only disk: nothing half-written stays behind
        partial.unlink(missing_ok=True)
        raise DownloadError(f"{partial}: cannot write ({err.strerror or err}); free space or choose another "
                            f"--root, then rerun") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    actual = calculate_md5(partial) if expected_md5 is not None else None
    if actual != expected_md5:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"{url}: MD5 mismatch (got {actual}, expected {expected_md5}); the file was "
                            f"discarded, retry or fetch it by hand into {target.parent}")
    problem = looks_right(partial) if looks_right is not None else None
    if problem:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"{url}: {problem}; the file was discarded, try another mirror or fetch it by "
                            f"hand into {target.parent}")
    os.replace(partial, target)
    return target


def download_omniglot(root: Path, sources: Iterable[str] = ("images_background", "images_evaluation"),
                      base_url: str | None = None, timeout: float = 60.0,
                      checksums: dict[str, str] | None = None) -> list[Path]:
    """Fetch each missing ``<source>.zip`` into ``root``; already-present files are kept."""
    checksums = checksums or OMNIGLOT_MD5
    base_url = (base_url or OMNIGLOT_URL).rstrip("/")
    paths = []
    for source in sources:
        if source not in checksums:
            raise DownloadError(f"omniglot source '{source}' has no published checksum; "
                                f"downloadable: {', '.join(checksums)}")
        target = Path(root) / f"{source}.zip"
        if not target.is_file():
            fetch(f"{base_url}/{source}.zip", target, checksums[source], timeout)
        paths.append(target)
    return paths


def download_mnist(root: Path, mirrors: Sequence[str] | None = None, timeout: float = 60.0) -> list[Path]:
    """Fetch MNIST's four IDX files into ``root/MNIST/raw`` (torchvision's layout), unpacked.

    Each ``.gz`` is MD5-checked against torchvision's table and kept beside its unpacked file, as
    ``torchvision.datasets.MNIST(download=True)`` does; files already unpacked are kept. Mirrors are
    tried in turn (``MNIST_MIRRORS``, torchvision's list); the error names the last one's failure.
    """
    mirrors = tuple(mirrors or MNIST_MIRRORS)
    raw = Path(root) / "MNIST" / "raw"
    paths = []
    for name, md5 in MNIST_FILES:
        unpacked = raw / name.removesuffix(".gz")
        if not unpacked.is_file():
            if not check_integrity(raw / name, md5):
                _fetch_from_mirrors(mirrors, name, raw / name, md5, timeout)
            _unpack(raw / name, unpacked)
        paths.append(unpacked)
    return paths


def download_miniimagenet(root: Path, splits: Iterable[str] = ("train", "validation", "test"),
                          mirrors: dict[str, Sequence[str]] | None = None, timeout: float = 60.0) -> list[Path]:
    """Fetch each missing ``mini-imagenet-cache-<split>.pkl`` (learn2learn's format) into ``root``,
    trying ``mirrors[split]`` in turn (default :data:`MINIIMAGENET_MIRRORS`); present files are kept."""
    mirrors = mirrors or MINIIMAGENET_MIRRORS
    paths = []
    for split in splits:
        if split not in mirrors:
            raise DownloadError(f"mini-ImageNet split '{split}' has no mirror; downloadable: {', '.join(mirrors)}")
        target = Path(root) / f"mini-imagenet-cache-{split}.pkl"
        if not target.is_file():
            _fetch_first(mirrors[split], target, None, timeout, _is_pickle)
        paths.append(target)
    return paths


def _is_pickle(path: Path) -> str | None:
    """What is wrong with a downloaded pickle: a dead share link answers with an HTML page instead."""
    with open(path, "rb") as handle:
        head = handle.read(64)
    if head.startswith(PICKLE_PROTOCOL_2_PLUS):
        return None
    kind = "an HTML page" if head.lstrip().lower().startswith((b"<!doctype", b"<html")) else "not a pickle"
    return f"got {kind} ({path.stat().st_size} bytes), not learn2learn's mini-ImageNet cache"


def _fetch_from_mirrors(mirrors: Sequence[str], name: str, target: Path, md5: str, timeout: float) -> None:
    _fetch_first([f"{mirror.rstrip('/')}/{name}" for mirror in mirrors], target, md5, timeout)


def _fetch_first(urls: Sequence[str], target: Path, md5: str | None, timeout: float,
                 looks_right: Callable[[Path], str | None] | None = None) -> None:
    """The first of ``urls`` that downloads and checks out; else the last failure, naming every URL."""
    failures = []
    for url in urls:
        try:
            fetch(url, target, md5, timeout, looks_right)
            return
        except DownloadError as err:
            failures.append(err)
    raise DownloadError(f"{failures[-1]} (tried {len(urls)} mirror(s): {', '.join(urls)})")


def _unpack(archive: Path, unpacked: Path) -> None:
    """Gunzip via torchvision into a scratch folder beside ``unpacked``, then rename: never half a file."""
    scratch = Path(tempfile.mkdtemp(dir=unpacked.parent, prefix=".unpack-"))
    try:
        extract_archive(str(archive), str(scratch))
        os.replace(scratch / unpacked.name, unpacked)
    except (OSError, EOFError) as err:
        raise DownloadError(f"{archive}: cannot unpack ({err}); delete it and download again") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
