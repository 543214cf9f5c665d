"""A run's state between phases and across kills: what it is, how it is saved, how a run resumes.

Everything a run needs to go on as if it had never stopped is in one :class:`RunState` and one file,
``checkpoint.pt``, written atomically (a kill mid-write leaves the previous checkpoint): the
algorithm's state (network, outer optimiser, carried inner-optimiser chains), the metrics rows, every
random generator's state, and ``extra``: the budget's counters, the phase clock, the floor's scores,
the best-validation state and the budget ladder's snapshots taken so far. A resumed run ends with
the same numbers as an uninterrupted one (CPU, same seed). Stop signals end training after a whole
iteration, so that the checkpoint written then is consistent (:func:`deferred_stop`).
"""

from __future__ import annotations

import io
import random
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from metacompare.engines import distributed

from metacompare import files

from metacompare.storage import results
from metacompare.config.loading import RunConfig, identity_of
from metacompare.errors import UserError

FILE = "checkpoint.pt"
FIX = "delete it to start this run afresh"
KEYS = ("config", "iteration", "algorithm", "metrics", "elapsed", "sampler_rng", "torch_rng", "numpy_rng",
        "python_rng", "status", "diverged_at")


@dataclass
class RunState:
    """What a run carries from phase to phase and across a kill. Its status is decided here alone."""

    iteration: int = 0
    rows: list[dict] = field(default_factory=list)  # metrics.csv: one row per validation
    elapsed: float = 0.0  # wall seconds of the run's earlier sessions
    train_time: float = 0.0  # seconds in meta-training steps, every session (seconds_per_iteration)
    peak_mb: float = 0.0  # the earlier sessions' peak memory
    diverged_at: int | None = None
    tested: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # budget counters, phases, floor, best state, rungs

    @property
    def status(self) -> str:
        """``running`` until tested, then ``finished``; ``diverged`` once a loss became non-finite."""
        if self.diverged_at is not None:
            return "diverged"
        return "finished" if self.tested else "running"

    @property
    def healthy(self) -> bool:
        return self.diverged_at is None

    def diverge(self, iteration: int) -> None:
        self.diverged_at = iteration


def write(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` of ``state`` written atomically: a kill mid-write leaves the previous file or none."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    results.atomic_write(path, buffer.getvalue())


def save(path: Path, state: RunState, algorithm, cfg: RunConfig, sampler_rng: random.Random, elapsed: float,
         peak_mb: float) -> None:
    """The checkpoint of ``state`` after its iteration; ``elapsed``: the run's wall seconds so far."""
    write(path, {"config": cfg.to_dict(), "iteration": state.iteration, "algorithm": algorithm.state_dict(),
                 "metrics": state.rows, "elapsed": elapsed, "train_time": state.train_time,
                 "peak_memory_mb": max(state.peak_mb, peak_mb), **_rng_states(sampler_rng),
                 "status": state.status, "diverged_at": state.diverged_at, "extra": state.extra})


def load(path: Path, cfg: RunConfig) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (None if there is none), refused if another config made it."""
    if not path.is_file() and not path.is_dir():
        return None
    saved = files.load_torch(path, FIX, required=KEYS)
    theirs, ours = saved["config"], cfg.identity()
    theirs = identity_of(theirs) if isinstance(theirs, dict) else {}
    if theirs != ours:
        changed = sorted(k for k in set(ours) | set(theirs) if theirs.get(k) != ours.get(k))
        raise UserError(f"{path}: the checkpoint was made with a different config (fields differ: "
                        f"{', '.join(changed)}); delete the run folder {path.parent} or restore the "
                        f"original config to resume")
    return saved


def resume(path: Path, cfg: RunConfig, algorithm, sampler_rng: random.Random) -> RunState:
    """The run's state where its checkpoint left it, loaded into ``algorithm`` and every random
    generator; a fresh state without a checkpoint. Rank 0 reads the file and the other ranks get it."""
    saved = distributed.from_writer(load(path, cfg) if distributed.is_writer() else None)
    if saved is None:
        return RunState()
    algorithm.load_state_dict(saved["algorithm"])
    _restore_rng_states(saved, sampler_rng)
    diverged_at = saved["diverged_at"] if saved["status"] == "diverged" else None
    return RunState(iteration=saved["iteration"], rows=saved["metrics"], elapsed=saved["elapsed"],
                    train_time=saved.get("train_time", 0.0), peak_mb=saved.get("peak_memory_mb", 0.0),
                    diverged_at=diverged_at, extra=saved.get("extra", {}))


def _rng_states(sampler_rng: random.Random) -> dict[str, Any]:
    """Every RNG state as tensors, numbers and tuples, which ``torch.load(weights_only=True)`` reads."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"sampler_rng": sampler_rng.getstate(), "torch_rng": torch.get_rng_state(),
            "numpy_rng": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
            "python_rng": random.getstate()}


def _restore_rng_states(state: dict[str, Any], sampler_rng: random.Random) -> None:
    name, keys, pos, has_gauss, gauss = state["numpy_rng"]
    sampler_rng.setstate(state["sampler_rng"])
    torch.set_rng_state(state["torch_rng"])
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python_rng"])


@contextmanager
def stop_signals_raise() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so that it, like Ctrl-C, ends in a saved checkpoint."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler) if _main_thread() else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class StopRequest:
    """Set by SIGINT/SIGTERM during training; the loop checkpoints at the end of the iteration and stops."""

    def __init__(self) -> None:
        self.signal: int | None = None


@contextmanager
def deferred_stop() -> Iterator[StopRequest]:
    """The first SIGINT or SIGTERM only asks the training loop to stop, so the checkpoint it then
    writes holds a whole iteration (model, optimiser, sampler state and metrics agree); a second one
    stops at once, keeping the last checkpoint. SIGINT is left alone where it is ignored (sweep workers)."""
    request = StopRequest()

    def handler(signum, frame):
        if request.signal is not None:
            raise KeyboardInterrupt(f"signal {signum}")
        request.signal = signum

    previous = {}
    if _main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            if sig == signal.SIGINT and signal.getsignal(sig) is not signal.default_int_handler:
                continue
            previous[sig] = signal.signal(sig, handler)
    try:
        yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
