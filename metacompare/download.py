"""Fetch the official Omniglot zips and check them against their published MD5 sums."""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from metacompare.errors import UserError

OMNIGLOT_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
# The dataset repository's published checksums (also listed in shared/data/omniglot/README.md).
OMNIGLOT_MD5 = {
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
}


class DownloadError(UserError):
    pass


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, target: Path, expected_md5: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``target`` via a temporary file; keep it only if its MD5 matches."""
    if not timeout > 0:
        raise DownloadError(f"--timeout: must be a positive number of seconds, got {timeout}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError(f"--root: cannot create the folder {target.parent} ({err.strerror}); "
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
    actual = md5sum(partial)
    if actual != expected_md5:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"{url}: MD5 mismatch (got {actual}, expected {expected_md5}); the file was "
                            f"discarded, retry or fetch it by hand into {target.parent}")
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
