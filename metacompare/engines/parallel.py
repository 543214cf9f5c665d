"""The data-parallel engine (:mod:`metacompare.engines.distributed`): each process runs its slice of the
meta-batch on the engine the config names; the slices' sums are all-reduced and divided by the
meta-batch size, so every process gets the one-process mean.

Looped, the tasks of other processes have their global-RNG draws replayed, so the random stream
(inner mini-batch shuffles) is the one-process stream. On stacks, a slice draws one shuffle sequence
for its whole stack, as the whole meta-batch does in one process.
"""

from __future__ import annotations

from typing import Callable

import torch

from metacompare.engines import distributed
from metacompare.algorithms.base import BatchGradient, MetaAlgorithm, TaskGradient
from metacompare.data import Task
from metacompare.engines import batched, compiled, looped, vmap

# The stacked form of each engine (None: looped), eager and compiled.
STACKED: dict[tuple[str, bool], batched.Part | None] = {
    ("looped", False): None, ("batched", False): batched.grouped_part, ("vmap", False): vmap.vmap_part,
    ("looped", True): None, ("batched", True): compiled.stacked_part("grouped"), ("vmap", True): compiled.stacked_part("vmap")}


def split_gradient(algorithm: MetaAlgorithm, tasks: list[Task], kind: str = "looped",
                   compile: bool = False) -> BatchGradient:
    """This process's slice of ``tasks`` on engine ``kind`` (compiled or not), all-reduced to the mean."""
    begin, end = distributed.bounds(len(tasks))
    mine = tasks[begin:end]
    part = STACKED[kind, compile]
    result = batched.stack_gradient(algorithm, mine, part) if part is not None else None
    if result is not None:
        sums = [g * len(mine) for g in result.grads]
        loss = result.loss * len(mine)
        accuracy_sum = None if result.accuracy is None else result.accuracy * len(mine)
    else:
        one: Callable[[MetaAlgorithm, Task], TaskGradient] = compiled.step if compile else looped.task_gradient
        for task in tasks[:begin]:
            algorithm.replay_draws(task)
        sums, loss, accuracy_sum = looped.summed(algorithm, (one(algorithm, task) for task in mine))
        for task in tasks[end:]:
            algorithm.replay_draws(task)
    stats = torch.tensor([loss, accuracy_sum or 0.0], dtype=torch.float64, device=sums[0].device)
    *sums, stats = distributed.all_sum([*sums, stats])
    n = len(tasks)
    return BatchGradient([g / n for g in sums], stats[0].item() / n,
                         None if accuracy_sum is None else stats[1].item() / n)
