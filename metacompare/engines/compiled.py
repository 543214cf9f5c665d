"""``compile: true``: an engine's pure form through ``torch.compile`` (:mod:`metacompare.engines.torch_compile`).

``torch.autograd.grad`` breaks a Dynamo graph and a compiled backward cannot be differentiated again,
so what is compiled is the engine's whole step as one pure ``torch.func`` function (forward, inner
steps, meta-gradient and logged fit): one task's (looped), the grouped network's (task-batched) or the
vmapped one's. Each is compiled on first use, once per algorithm object and shape.
"""

from __future__ import annotations

import weakref
from typing import Callable

from metacompare.engines import torch_compile as compiled
from metacompare.algorithms.base import BatchGradient, MetaAlgorithm, TaskGradient
from metacompare.data import Task
from metacompare.engines import batched, looped, rules, vmap
from metacompare.engines.net import TaskNet

_COMPILED: "weakref.WeakKeyDictionary[MetaAlgorithm, dict]" = weakref.WeakKeyDictionary()


def task_pure(algorithm: MetaAlgorithm) -> Callable:
    """One task's meta-gradient, loss and accuracy as one pure function of detached meta-parameters
    and the task's tensors (what the looped engine compiles)."""
    net = TaskNet(algorithm, pure=True)

    def run(params, sx, sy, qx, qy):
        return rules.pure_gradient(algorithm, net, params, Task(sx, sy, qx, qy))
    return run


def step(algorithm: MetaAlgorithm, task: Task, kind: str = "task") -> TaskGradient:
    """The compiled ``kind`` step on ``task`` (a stack for the batched kinds), compiled on first use."""
    cache = _COMPILED.setdefault(algorithm, {})
    if kind not in cache:
        pure = {"task": lambda: task_pure(algorithm), "grouped": lambda: batched.grouped_pure(algorithm),
                "vmap": lambda: vmap.vmapped(algorithm, not task.query_y.is_floating_point())}[kind]()
        cache[kind] = compiled.compile_pure(pure, algorithm.cfg.device)
    params = {k: v.detach() for k, v in algorithm.named_meta_parameters().items()}
    grads, loss, acc = cache[kind](params, task.support_x, task.support_y, task.query_x, task.query_y)
    # CUDA graphs reuse their output buffers on the next call: take copies before that happens.
    return TaskGradient([g.clone() for g in grads], loss.item(), None if acc is None else acc.item())


def looped_gradient(algorithm: MetaAlgorithm, tasks: list[Task]) -> BatchGradient:
    """The looped engine with each task's step compiled."""
    total, loss, accuracy_sum = looped.summed(algorithm, (step(algorithm, t) for t in tasks))
    n = len(tasks)
    return BatchGradient([g / n for g in total], loss / n, None if accuracy_sum is None else accuracy_sum / n)


def stacked_part(kind: str) -> batched.Part:
    """A stack's compiled ``kind`` step (``grouped`` or ``vmap``) as a :data:`~metacompare.engines.batched.Part`."""
    def part(algorithm: MetaAlgorithm, tasks: list[Task]) -> BatchGradient:
        result = step(algorithm, batched.stack(tasks), kind)
        return BatchGradient(result.grads, result.loss, result.accuracy)
    return part


def batched_gradient(algorithm: MetaAlgorithm, tasks: list[Task]) -> BatchGradient:
    """The task-batched engine with each stack's step compiled."""
    return batched.stack_gradient(algorithm, tasks, stacked_part("grouped")) or looped_gradient(algorithm, tasks)


def vmap_gradient(algorithm: MetaAlgorithm, tasks: list[Task]) -> BatchGradient:
    """The ``vmap`` engine with each stack's step compiled."""
    return batched.stack_gradient(algorithm, tasks, stacked_part("vmap")) or looped_gradient(algorithm, tasks)
