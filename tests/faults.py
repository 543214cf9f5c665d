"""Helpers for the reliability tests: tiny generated data, local servers, and file-tree snapshots.

Everything here is generated on the fly in a test's ``tmp_path``; no test copies the real data.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# One torch thread per child: on a shared, busy machine two threads per process can make a tiny run
# a hundred times slower (threads spin waiting for each other), and the kill tests need steady timing.
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ------------------------------------------------------------------------------------------- data
def omniglot_zip(path: Path, source: str = "images_background_small1", alphabets: int = 4,
                 characters: int = 3, drawers: int = 4, size: int = 12, seed: int = 0) -> Path:
    """Write a fake official Omniglot zip: ``<source>/<Alphabet>/characterNN/NNNN_MM.png``.

    Alphabets are named ``Alpha0``, ``Alpha1`` ...; each drawing is random ink on white, so classes
    are distinguishable but the file is a few kilobytes.
    """
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for a in range(alphabets):
            for c in range(characters):
                for d in range(drawers):
                    pixels = np.where(rng.random((size, size)) < 0.3, 0, 255).astype(np.uint8)
                    buffer = io.BytesIO()
                    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
                    name = f"{source}/Alpha{a}/character{c + 1:02d}/{a * 100 + c + 1:04d}_{d + 1:02d}.png"
                    zf.writestr(name, buffer.getvalue())
    return path


def omniglot_config(data_root: Path, **fields) -> dict:
    """A tiny, fast Omniglot config for the fake zip of :func:`omniglot_zip`."""
    cfg = {"experiment": "fake", "algorithm": "fomaml", "dataset": "omniglot", "data_root": str(data_root),
           "model": "conv4_strided", "filters": 4, "ways": 2, "shots": 1, "query": 1, "inner_lr": 0.1,
           "meta_batch_size": 2, "iterations": 2, "eval_interval": 1, "eval_episodes": 2,
           "test_episodes": 2, "eval_inner_steps": 1,
           "omniglot": {"sources": ["images_background_small1"], "rotations": False, "image_size": 12,
                        "train_alphabets": ["Alpha0", "Alpha1"], "validation_alphabets": ["Alpha2"],
                        "test_alphabets": ["Alpha3"], "download": False}}
    for key, value in fields.items():
        cfg[key] = value
    return cfg


def sine_config(**fields) -> dict:
    """A sine config small enough to train in a second or two."""
    cfg = {"experiment": "tiny", "algorithm": "fomaml", "dataset": "sine", "model": "mlp", "ways": 1,
           "shots": 5, "query": 5, "inner_lr": 0.01, "inner_steps": 1, "outer_lr": 0.001,
           "meta_batch_size": 2, "iterations": 6, "eval_interval": 3, "eval_episodes": 3,
           "test_episodes": 4, "eval_inner_steps": 2, "checkpoint_interval": 2, "seed": 3}
    cfg.update(fields)
    return cfg


def write_config(path: Path, cfg: dict | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg, sort_keys=False))
    return path


def md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------- file checks
def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``: folders map to '/', files to their MD5."""
    root = Path(root)
    if not root.exists():
        return {}
    tree = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        tree[rel] = "/" if path.is_dir() else md5(path)
    return tree


def leftovers(root: Path) -> list[str]:
    """Temporary or partial files that an interrupted write would leave behind."""
    return sorted(str(p) for p in Path(root).rglob("*")
                  if p.name.endswith((".tmp", ".part")) or p.name.startswith(".write-test-"))


# ------------------------------------------------------------------------------------------ CLI
def one_torch_thread():
    """Fixture body: run in-process training on one thread (see CHILD_ENV for why), then restore."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run the CLI in this process; return (exit code, stdout, stderr)."""
    from metacompare.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli_process(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m metacompare`` in a child process."""
    return subprocess.run([sys.executable, "-m", "metacompare", *map(str, argv)], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout, env=CHILD_ENV)


def start_run(config: Path, results: Path, *extra: str) -> subprocess.Popen:
    """Start ``python -m metacompare run`` in the background (its own process group)."""
    return subprocess.Popen([sys.executable, "-m", "metacompare", "run", str(config), "--results-dir",
                             str(results), "--no-progress", "--no-report", *extra], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=CHILD_ENV)


def start_sweep(sweep: Path, results: Path, *extra: str) -> subprocess.Popen:
    """Start ``python -m metacompare sweep`` in the background; its workers share its process group."""
    return subprocess.Popen([sys.executable, "-m", "metacompare", "sweep", str(sweep), "--results-dir",
                             str(results), "--no-progress", *extra], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=CHILD_ENV)


def kill_group(process: subprocess.Popen, sig: int = signal.SIGKILL) -> tuple[int, str, str]:
    """Send ``sig`` to the process and every worker in its process group (a crash of the whole job)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


def wait_for(predicate, timeout: float = 120.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def kill(process: subprocess.Popen, sig: int = signal.SIGKILL) -> tuple[int, str, str]:
    """Send ``sig`` to the process and wait; returns (exit code, stdout, stderr)."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


def final_metrics(run_folder: Path) -> tuple[list[dict], dict]:
    """metrics.csv rows without wall-clock times, and the summary's test scores."""
    import csv

    with open(run_folder / "metrics.csv", newline="") as handle:
        clocks = ("wall_time_s", "train_seconds", "train_cpu_seconds", "validation_seconds", "logging_seconds")
        rows = [{k: v for k, v in row.items() if k not in clocks} for row in csv.DictReader(handle)]
    summary = json.loads((run_folder / "summary.json").read_text())
    scores = {k: summary[k] for k in ("status", "iterations_done", "test_loss_mean", "test_loss_ci95",
                                      "test_accuracy_mean")}
    return rows, scores


# -------------------------------------------------------------------------------------- servers
@contextlib.contextmanager
def file_server(directory: Path) -> Iterator[str]:
    """Serve ``directory`` over HTTP on 127.0.0.1; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A server on 127.0.0.1 that accepts connections and never answers; yields the base URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens, so connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
