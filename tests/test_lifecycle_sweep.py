"""A sweep's workers never outlive it: the parent's death, SIGTERM or Ctrl-C stop them within seconds.

Real ``python -m metacompare sweep`` processes with two workers on runs far too long to finish; the
test stops the sweep one way or another and then looks at the process table and the run folders:
no worker left, no queued run started after the stop, every started run checkpointed.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from metacompare.errors import UserError
from metacompare.workflows.executors import RAY_CONNECT_TIMEOUT_S, experiment_lock
from metacompare.workflows.sweep import expand_sweep, run_sweep
from metacompare.files import load_torch
from tests.faults import closed_port_url, sine_config, start_sweep, wait_for, write_config

LONG = {"experiment": "long", "base": sine_config(iterations=10**6, eval_interval=10**5, checkpoint_interval=20),
        "grid": {"seed": [0, 1, 2, 3, 4]}}
STOP_WITHIN_S = 30.0  # generous for a loaded 2-core machine; an idle one stops in about a second


def children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def workers_of(process) -> list[int]:
    return [p for p in children(process.pid)
            if b"resource_tracker" not in (Path("/proc") / str(p) / "cmdline").read_bytes()]


def started_runs(results: Path) -> list[Path]:
    return sorted(p.parent for p in (results / "long").glob("*/config.yaml"))


def start_and_wait_for_training(tmp_path: Path):
    sweep = write_config(tmp_path / "long.yaml", LONG)
    process = start_sweep(sweep, tmp_path / "results", "--workers", "2")
    checkpoints = lambda: len(list((tmp_path / "results" / "long").glob("*/checkpoint.pt")))  # noqa: E731
    assert wait_for(lambda: checkpoints() >= 2 or process.poll() is not None, timeout=600)  # slow when loaded
    assert process.poll() is None, process.communicate()
    workers = workers_of(process)
    assert len(workers) == 2, workers
    return process, workers


def check_stopped(tmp_path: Path, workers: list[int], stopped_at: float) -> None:
    assert wait_for(lambda: not any(alive(w) for w in workers), timeout=STOP_WITHIN_S, interval=0.1), \
        "a worker outlived its sweep"
    assert time.monotonic() - stopped_at < STOP_WITHIN_S
    runs = started_runs(tmp_path / "results")
    assert len(runs) == 2, "a queued run was started after the stop"
    for run in runs:  # each stopped run left a whole checkpoint to resume from
        assert load_torch(run / "checkpoint.pt", "")["iteration"] > 0


@pytest.mark.slow  # a real sweep and its workers: about 13 s on a 2-core machine
def test_killing_only_the_parent_stops_its_workers(tmp_path):
    process, workers = start_and_wait_for_training(tmp_path)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    check_stopped(tmp_path, workers, time.monotonic())
    with experiment_lock(tmp_path / "results" / "long"):  # the lock went with the parent
        pass


@pytest.mark.slow  # a real sweep and its workers: about 15 s each on a 2-core machine
@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)],
                         ids=["SIGTERM", "SIGINT-to-the-group"])
def test_a_stop_signal_stops_the_sweep_and_its_workers_promptly(tmp_path, sig):
    process, workers = start_and_wait_for_training(tmp_path)
    stopped_at = time.monotonic()
    if sig == signal.SIGINT:
        os.killpg(process.pid, sig)  # Ctrl-C in a terminal reaches the whole foreground group
    else:
        os.kill(process.pid, sig)  # a scheduler or `timeout` signals the parent alone
    _, err = process.communicate(timeout=STOP_WITHIN_S + 30)
    assert process.returncode == 130, err
    assert "interrupted; progress is checkpointed" in err and "Traceback" not in err
    check_stopped(tmp_path, workers, stopped_at)


@pytest.mark.skipif(__import__("importlib").util.find_spec("ray") is None, reason="ray is not installed")
def test_an_unreachable_ray_address_fails_in_time_and_frees_the_lock(tmp_path):
    configs = expand_sweep({"experiment": "ray", "base": sine_config(results_dir=str(tmp_path))})
    address = closed_port_url().removeprefix("http://")
    began = time.monotonic()
    with pytest.raises(UserError, match=f"--address {address}: no Ray cluster answered within"):
        run_sweep(configs, executor="ray", address=address, progress=False)
    assert time.monotonic() - began < RAY_CONNECT_TIMEOUT_S + 30  # importing ray itself takes seconds
    with experiment_lock(tmp_path / "ray"):
        pass
    with pytest.raises(UserError, match="expected host:port"):
        run_sweep(configs, executor="ray", address="nonsense", progress=False)


@pytest.mark.parametrize("prctl", [True, False], ids=["PR_SET_PDEATHSIG", "polling-thread"])
def test_a_worker_whose_parent_is_gone_stops_itself(prctl):
    """Both ways of noticing an orphaned worker, forced by naming a parent that is not this one's."""
    import subprocess
    import sys

    code = ("import ctypes, time; from metacompare import pool\n"
            + ("" if prctl else "pool.ctypes.CDLL = lambda *a, **k: (_ for _ in ()).throw(OSError())\n")
            + "pool._follow_parent(-1)\ntime.sleep(30)\n")
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], timeout=60)
    assert done.returncode == -signal.SIGTERM and time.monotonic() - began < 25
