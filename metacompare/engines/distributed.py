"""Data-parallel meta-batches on ``torch.distributed``: one run across processes, cores, GPUs and machines.

A meta-batch is 16-32 independent tasks, so the cheapest parallelism is to give each process a slice of
them (Goyal et al. 2017 do the same with examples; PyTorch's ``DistributedDataParallel``). Every process
samples the *whole* meta-batch from the same seeded sampler and keeps its contiguous slice
(:func:`bounds`), so the union of the slices is exactly the one-process meta-batch whatever the number
of processes; the slices' gradient sums are all-reduced and divided by the meta-batch size, which is
the one-process mean, and every replica takes the same outer step. Evaluation episodes are split the
same way and the scores gathered back in episode order.

The processes are started by ``torchrun`` (``torch.distributed.run``), which describes the group in
environment variables (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...); :func:`start` joins it with gloo
on the CPU and NCCL on CUDA. Without those variables everything here is a no-op for one process.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from typing import Any, Sequence

import torch
import torch.distributed as dist
import yaml

from metacompare.errors import ConfigError


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    """This process's rank; read from ``RANK`` before the group is joined (torchrun sets it)."""
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def is_writer() -> bool:
    """Only rank 0 writes checkpoints, results, reports and progress bars."""
    return rank() == 0


def start(device: str = "cpu") -> None:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1); nothing for one process.

    gloo on the CPU, NCCL on CUDA with this process on GPU ``LOCAL_RANK`` (so ``device: cuda`` is the
    process's own GPU). With more processes on a machine than GPUs, processes share GPUs round-robin
    and reduce through gloo (which takes CUDA tensors), since NCCL refuses two ranks on one GPU.
    Left at exit by :func:`stop`.
    """
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    backend = "gloo"
    if device.startswith("cuda"):
        gpus, local = torch.cuda.device_count(), int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local % gpus)
        on_this_machine = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
        backend = "nccl" if on_this_machine <= gpus else "gloo"
    if "TORCHELASTIC_RUN_ID" in os.environ:  # torchrun starts workers in their own sessions:
        from metacompare.engines.pool import _follow_parent  # one killed launcher must not leave them running

        _follow_parent(os.getppid())  # its death sends SIGTERM, which ends in a checkpoint
    dist.init_process_group(backend)
    atexit.register(stop)


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def bounds(count: int, at: int | None = None, of: int | None = None) -> tuple[int, int]:
    """``[start, stop)`` of rank ``at``'s contiguous slice of ``count`` items among ``of`` ranks: the
    first ``count % of`` ranks take one item more (``numpy.array_split``'s rule)."""
    at, of = rank() if at is None else at, world_size() if of is None else of
    size, extra = divmod(count, of)
    begin = at * size + min(at, extra)
    return begin, begin + size + (1 if at < extra else 0)


def share(items: Sequence) -> Sequence:
    """This rank's slice of ``items``."""
    begin, end = bounds(len(items))
    return items[begin:end]


def all_sum(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each tensor summed over the ranks, in one all-reduce of a float64 buffer (the sum of float32
    gradients is then rounded once, not once per rank)."""
    if world_size() == 1:
        return tensors
    flat = torch.cat([t.reshape(-1).to(torch.float64) for t in tensors])
    dist.all_reduce(flat)
    out, at = [], 0
    for t in tensors:
        out.append(flat[at:at + t.numel()].reshape(t.shape).to(t.dtype))
        at += t.numel()
    return out


def gather(items: list) -> list:
    """Every rank's ``items`` (picklable), concatenated in rank order: with :func:`share`'s contiguous
    slices, the original order."""
    if world_size() == 1:
        return items
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]


def from_writer(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a decision, a checkpoint read by rank 0 alone)."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flag: bool) -> bool:
    """True on every rank if it is true on one (a stop signal reaching some ranks first)."""
    if world_size() == 1:
        return flag
    return any(gather([bool(flag)]))


def check(cfg, procs: int | None = None) -> None:
    """Refuse what cannot be split across ``procs`` ranks (default: this run's) without changing the
    maths (ConfigError)."""
    reason = refusal(cfg, world_size() if procs is None else procs)
    if reason is not None:
        raise ConfigError(reason)


def refusal(cfg, procs: int) -> str | None:
    """Why ``cfg`` cannot run on ``procs`` processes with the one-process maths, or None if it can."""
    if procs == 1:
        return None
    if cfg.inner_state == "carry" and cfg.inner_chains < procs:
        # each process carries whole chains (algorithms.reptile): a chain cannot be split
        return (f"inner_state: carry makes each task start from the inner optimiser state the previous task "
                f"left, and {cfg.inner_chains} such chain(s) cannot be split over {procs} processes; set "
                f"inner_chains: {procs} (or more; one chain per share of the meta-batch), inner_state: reset, "
                f"or run one process")
    if cfg.meta_batch_size < procs:
        return (f"meta_batch_size: {cfg.meta_batch_size} tasks cannot be shared by {procs} processes; "
                f"use at most {cfg.meta_batch_size} processes")
    if cfg.model == "resnet12" and cfg.resnet12.dropblock_rate > 0:
        return ("resnet12.dropblock_rate: DropBlock draws its masks from each process's own random stream, so "
                f"{procs} processes would not compute the one-process run; set it to 0 or run one process")
    if cfg.batch_tasks and cfg.task_chunk and cfg.inner_batch_size:
        return ("task_chunk with inner mini-batches draws one shuffle per chunk, which depends on how the "
                f"meta-batch is split; set task_chunk: 0 or inner_batch_size: 0 to run on {procs} processes")
    if cfg.mamlpp is not None and cfg.mamlpp.per_step_bn_statistics:  # no algorithm's preset turns them on (test)
        return ("mamlpp.per_step_bn_statistics: each process would keep running statistics of its own "
                "slice of the meta-batch; run with --procs 1 or set it to false")
    return None


def run_config(cfg, procs: int, progress: bool = True, force: bool = False) -> int:
    """Train one config on ``procs`` local processes (``metacompare run`` under torchrun, on a copy of
    the config in a temporary file); return the exit status. Results land in ``cfg``'s run folder, with
    the commit's provenance as ``run`` records it. The launcher checks that folder (writable; a dirty
    tree refused unless allowed) before any worker starts; the workers inherit the permission.

    Every relaunch goes through here: the workers' command line is rebuilt from the checked config,
    never from the launcher's own spelling of its options, so no worker is ever given ``--procs``."""
    from metacompare.storage import results

    results.check_writable(os.path.join(cfg.results_dir, cfg.experiment))
    folder = os.path.join(cfg.results_dir, cfg.experiment, cfg.run_id())
    if os.path.isdir(folder):  # waited for here, not by rank 0 while the other workers wait in a collective
        with results.run_lock(folder):
            pass
    with tempfile.TemporaryDirectory(prefix="metacompare-") as folder:
        path = os.path.join(folder, "config.yaml")
        with open(path, "w") as handle:
            yaml.safe_dump(cfg.to_dict(), handle, sort_keys=False)
        return launch(["run", path, "--results-dir", cfg.results_dir, "--no-report",  # dir: for ps
                       *([] if progress else ["--no-progress"]), *(["--force"] if force else [])], procs)


def in_worker() -> bool:
    """Whether this process is one of a multi-process group (torchrun's, ours or the user's)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def launch(argv: list[str], procs: int) -> int:
    """Run ``metacompare <argv>`` as ``procs`` local processes under torchrun, rendezvous on 127.0.0.1
    (a free port); return its exit status. One torch thread per process (``OMP_NUM_THREADS=1``).

    Refused inside a worker, so that a launch can never multiply. torchrun runs in its own process
    group: a Ctrl-C or SIGTERM reaches this launcher alone, which passes it on once to torchrun (which
    stops the workers, each with a checkpoint) and, when torchrun has exited, raises KeyboardInterrupt:
    exit 130 and the CLI's one line, as a one-process run ends.
    """
    if in_worker():
        raise ConfigError("--procs: this process is already one of a multi-process run's workers and will not "
                          "start more; give --procs only to the command you start yourself")
    command = [sys.executable, "-c", _TORCHRUN, "--nnodes", "1", "--nproc-per-node", str(procs),
               "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0", "--rdzv-id", uuid.uuid4().hex,
               "--module", "metacompare", *argv]
    env = {"OMP_NUM_THREADS": "1", "LOGLEVEL": "ERROR", **os.environ, LAUNCHED: "1"}  # LOGLEVEL: see torchrun
    stops: list[int] = []
    with subprocess.Popen(command, env=env, preexec_fn=_die_with_parent, process_group=0) as launcher:
        def forward(signum, frame):
            stops.append(signum)
            launcher.send_signal(signum)
        previous = signal.signal(signal.SIGTERM, forward)
        try:
            while True:
                try:
                    status = launcher.wait()
                    break
                except KeyboardInterrupt:
                    forward(signal.SIGINT, None)
        finally:
            signal.signal(signal.SIGTERM, previous)
    if stops and status:  # stopped (a run that finished as the stop came is finished)
        raise KeyboardInterrupt(f"signal {stops[0]}")
    return status


LAUNCHED = "METACOMPARE_LAUNCHED"  # set in the workers :func:`launch` starts: their launcher reports stops
_TORCHRUN = "import sys; from metacompare.engines.distributed import torchrun; sys.exit(torchrun(sys.argv[1:]))"


def torchrun(argv: list[str]) -> int:
    """torchrun's main with its two ends as exit statuses, not tracebacks: a stop signal (128 + its
    number; the workers have checkpointed) and a failed worker (its status; it printed its own line).
    Its notices of passing a stop on are left out: the launcher says it in one line."""
    import logging

    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main

    try:
        main(argv)
    except SignalException as stop:
        return 128 + int(stop.sigval)
    except ChildFailedError as failed:
        code = failed.get_first_failure()[1].exitcode
        return code if code > 0 else 128 - code if code < 0 else 1
    return 0


def _die_with_parent() -> None:
    """In torchrun's process, before exec: SIGTERM it if this launcher dies (Linux ``PR_SET_PDEATHSIG``)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
