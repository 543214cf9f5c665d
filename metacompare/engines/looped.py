"""The looped engine: one task after another, each task's gradient by ``torch.autograd``.

The reference every other engine is tested against. With ``inner_state: carry`` (supervised-reptile,
Nichol et al. 2018) each task's inner optimiser starts from the state the previous task left.
"""

from __future__ import annotations

import torch

from metacompare.algorithms.base import BatchGradient, MetaAlgorithm, TaskGradient
from metacompare.data import Task
from metacompare.engines import rules
from metacompare.engines.net import TaskNet


def task_gradient(algorithm: MetaAlgorithm, task: Task, net: TaskNet | None = None) -> TaskGradient:
    """``task``'s contribution to the meta-gradient, parallel to ``meta_parameters()``; ``net`` (default:
    one task's, carrying the algorithm's inner state under ``inner_state: carry``) runs it."""
    if net is None:
        carry = algorithm.cfg.inner_state == "carry"
        net = TaskNet(algorithm, carry=carry, state=algorithm.inner_state if carry else None)
        step = task_gradient(algorithm, task, net)
        if carry:
            algorithm.inner_state = net.state
        return step
    grads, objective = rules.autograd_gradient(algorithm, net, task)
    return TaskGradient(grads, *rules.logged_fit(algorithm, net, objective))


def summed(algorithm: MetaAlgorithm, steps) -> tuple[list[torch.Tensor], float, float | None]:
    """The sums of task gradients, losses and accuracies (None for regression) of ``steps``."""
    total = [torch.zeros_like(p) for p in algorithm.meta_parameters()]
    loss, accuracy_sum = 0.0, None
    for step in steps:
        for acc, g in zip(total, step.grads):
            acc.add_(g)
        loss += step.loss
        if step.accuracy is not None:
            accuracy_sum = (accuracy_sum or 0.0) + step.accuracy
    return total, loss, accuracy_sum


def looped_gradient(algorithm: MetaAlgorithm, tasks: list[Task]) -> BatchGradient:
    """One task after another, each task's gradient by autograd: the reference engine."""
    total, loss, accuracy_sum = summed(algorithm, (task_gradient(algorithm, task) for task in tasks))
    n = len(tasks)
    return BatchGradient([g / n for g in total], loss / n, None if accuracy_sum is None else accuracy_sum / n)
