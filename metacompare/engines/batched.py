"""The task-batched engine: a whole meta-batch in one grouped network (:mod:`metacompare.models.grouped`).

Every task gets its own copy of θ along a leading task axis and the objective runs once on the stack;
``task_chunk`` bounds memory by running that many tasks at a time (plug-ins that read it), the chunks'
means weighted by their sizes. A meta-batch that cannot be stacked runs looped: tasks of unequal shapes,
an inner state carried from task to task (each task starts where the previous one ended), BatchNorm
running statistics (MAML++'s BNRS: they would mix the tasks), or an inner loop of another library.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from metacompare.models import grouped
from metacompare.algorithms.base import BatchGradient, MetaAlgorithm
from metacompare.data import Task
from metacompare.engines import looped, rules
from metacompare.engines.net import TaskNet

Part = Callable[[MetaAlgorithm, list[Task]], BatchGradient]


class TaskStack(Task):
    """Tasks stacked along a leading axis (``[T, N, ...]``); all of a task's examples join on axis 1."""

    @property
    def all_x(self) -> torch.Tensor:
        return torch.cat([self.support_x, self.query_x], 1)

    @property
    def all_y(self) -> torch.Tensor:
        return torch.cat([self.support_y, self.query_y], 1)


def stack(tasks: list[Task]) -> TaskStack:
    return TaskStack(*(grouped.stack([getattr(t, name) for t in tasks])
                       for name in ("support_x", "support_y", "query_x", "query_y")))


def stackable(algorithm: MetaAlgorithm, tasks: list[Task]) -> bool:
    """Whether ``tasks`` can run as one stack (see the module docstring)."""
    cfg = algorithm.cfg
    running = any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
                  for m in algorithm.model.modules())
    return (cfg.backend == "metacompare" and cfg.inner_state != "carry" and not running
            and grouped.same_shapes(tasks))


def grouped_part(algorithm: MetaAlgorithm, tasks: list[Task]) -> BatchGradient:
    """The mean meta-gradient of ``tasks`` in one grouped network, by ``torch.autograd``."""
    net = TaskNet(algorithm, tasks=len(tasks))
    grads, objective = rules.autograd_gradient(algorithm, net, stack(tasks))
    return BatchGradient(list(grads), *rules.logged_fit(algorithm, net, objective))


def stack_gradient(algorithm: MetaAlgorithm, tasks: list[Task], part: Part = grouped_part) -> BatchGradient | None:
    """The mean meta-gradient of ``tasks`` by ``part`` on stacks, chunked by ``task_chunk`` for plug-ins
    that read it; None where the tasks cannot be stacked."""
    if not stackable(algorithm, tasks):
        return None
    if "task_chunk" not in algorithm.uses:
        return part(algorithm, tasks)
    chunk = algorithm.cfg.task_chunk or len(tasks)
    return weighted_mean([(len(tasks[i:i + chunk]), part(algorithm, tasks[i:i + chunk]))
                          for i in range(0, len(tasks), chunk)])


def batched_gradient(algorithm: MetaAlgorithm, tasks: list[Task]) -> BatchGradient:
    """The whole meta-batch in one grouped network (looped where the tasks cannot be stacked)."""
    return stack_gradient(algorithm, tasks) or looped.looped_gradient(algorithm, tasks)


def weighted_mean(parts: list[tuple[int, BatchGradient]]) -> BatchGradient:
    """The mean over all tasks of chunks' means, each weighted by its number of tasks."""
    total = sum(n for n, _ in parts)
    grads = [sum(n * r.grads[i] for n, r in parts) / total for i in range(len(parts[0][1].grads))]
    loss = sum(n * r.loss for n, r in parts) / total
    acc = None if parts[0][1].accuracy is None else sum(n * r.accuracy for n, r in parts) / total
    return BatchGradient(grads, loss, acc)


def grouped_pure(algorithm: MetaAlgorithm) -> Callable:
    """The stack's mean meta-gradient, loss and accuracy as one pure function of detached meta-parameters
    and the stacked tensors (what ``compile: true`` compiles for the task-batched engine)."""
    def run(params, sx, sy, qx, qy):
        net = TaskNet(algorithm, tasks=len(sx), pure=True)
        return rules.pure_gradient(algorithm, net, params, TaskStack(sx, sy, qx, qy))
    return run
