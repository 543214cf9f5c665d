"""Local worker processes (for sweep, compare and tune) that never outlive their parent and stop promptly.

Each worker is a fresh (spawned) interpreter that takes one run at a time from a shared queue, so
no run is handed out before a worker is free. Stopping has one path, SIGTERM: the parent sends it on
Ctrl-C, SIGTERM or an error; the kernel sends it when the parent dies, even by SIGKILL
(``PR_SET_PDEATHSIG``, with a parent-watching thread as a fallback). The runner turns it into a
checkpoint at the end of the current iteration, after which the worker exits without taking
another run.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import queue
import signal
import threading
import time
from typing import Any, Callable, Iterator

STOP_GRACE_S = 30.0  # after a stop, how long workers get to checkpoint before they are killed
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a Linux child gets when its parent dies


def _follow_parent(parent: int) -> None:
    """Stop this worker (SIGTERM, so it checkpoints first) when the parent process dies, however it dies.

    Linux delivers the signal itself (``PR_SET_PDEATHSIG``); elsewhere a thread polls the parent id.
    Only one of the two is armed: a second SIGTERM would cut the worker's checkpoint short.
    """
    armed = False
    with contextlib.suppress(OSError, AttributeError):
        armed = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM) == 0
    if armed:
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _exit_on_stop(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _worker(jobs, events, parent: int, run: Callable, cwd: str) -> None:
    """A worker: take runs from ``jobs`` one at a time until a ``None`` or a stop.

    Ctrl-C reaches the whole process group, but only the parent acts on it (SIGINT is ignored here): it
    sends each worker one SIGTERM, which the runner turns into a checkpoint at the end of the iteration;
    between runs SIGTERM exits at once. So no worker starts a queued run after a stop.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_stop)
    _follow_parent(parent)
    try:
        while (job := jobs.get()) is not None:
            index, cfg = job
            events.put(("start", os.getpid(), index, None))
            events.put(("done", os.getpid(), index, run(cfg, cwd)))
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # no run left to save: a stop now just ends the exit
    except KeyboardInterrupt:  # the runner checkpointed and stopped: take no further run
        raise SystemExit(130) from None


def local_results(configs: list, workers: int, run: Callable, failed: Callable) -> Iterator[tuple[Any, dict]]:
    """``(config, run(config, cwd))`` for every config as each finishes, from ``workers`` processes.

    ``run`` must be a module-level function (it is pickled by name); a worker that dies mid-run gives
    ``failed(config, message)`` for that run. Leaving the generator early (an exception, Ctrl-C)
    stops every worker: see :func:`_stop_workers`.
    """
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
    jobs, events = context.Queue(), context.Queue()
    jobs.cancel_join_thread()  # undelivered jobs must not hold this process open after a stop
    for job in [*enumerate(configs), *[None] * workers]:
        jobs.put(job)
    procs = [context.Process(target=_worker, args=(jobs, events, os.getpid(), run, os.getcwd()), name=f"sweep-worker-{i}")
             for i in range(workers)]
    for proc in procs:
        proc.start()
    pending = _Pending(configs, failed)
    try:
        while pending.left:
            try:
                kind, pid, index, summary = events.get(timeout=0.5)
            except queue.Empty:
                yield from pending.casualties(procs)
                continue
            if kind == "start":
                pending.running[pid] = index
            else:
                pending.running.pop(pid, None)
                yield from pending.take(index, summary)
    finally:
        _stop_workers(procs)


class _Pending:
    """Which runs are queued, running (on which worker) and reported, so a dead worker's run is reported
    once, as failed, and runs that no live worker can take are not waited for."""

    def __init__(self, configs: list, failed: Callable) -> None:
        self.configs, self.failed, self.running, self.yielded = configs, failed, {}, set()

    @property
    def left(self) -> int:
        return len(self.configs) - len(self.yielded)

    def take(self, index: int, summary: dict) -> Iterator[tuple[Any, dict]]:
        if index not in self.yielded:
            self.yielded.add(index)
            yield self.configs[index], summary

    def casualties(self, procs: list) -> Iterator[tuple[Any, dict]]:
        for proc in procs:
            if not proc.is_alive() and proc.pid in self.running:
                index = self.running.pop(proc.pid)  # by position: two equal jobs are still two jobs
                yield from self.take(index, self.failed(self.configs[index], f"worker process {proc.pid} died "
                                                        f"(exit status {proc.exitcode}); rerun the command to resume it"))
        if not any(proc.is_alive() for proc in procs):
            for index, cfg in enumerate(self.configs):
                yield from self.take(index, self.failed(cfg, "not run: every worker process died; rerun the command"))


def _stop_workers(procs: list, grace: float = STOP_GRACE_S) -> None:
    """SIGTERM every live worker (each checkpoints and exits), wait up to ``grace``, then SIGKILL."""
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + grace
    try:
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
    finally:  # also on a second Ctrl-C: nothing may outlive the parent
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(5)
