"""The ``vmap`` engine: one task's pure meta-gradient, mapped over the meta-batch by ``torch.func.vmap``.

The torch.func MAML example's shape (``functional_call`` + ``grad`` for one task, ``vmap`` over the
tasks): the objective is written for one task and vmap batches every operation in it, so no grouped form
of the network is needed (any module ``functional_call`` runs). On a GPU it turns a meta-batch's many
small kernels into a few large ones, like the grouped network. Random draws inside (inner mini-batch
shuffles) are the same for every task of the stack (``randomness="same"``), as in the grouped network.
"""

from __future__ import annotations

from typing import Callable

import torch

from metacompare.algorithms.base import BatchGradient, MetaAlgorithm
from metacompare.data import Task
from metacompare.engines import batched, looped, rules
from metacompare.engines.net import TaskNet


def vmapped(algorithm: MetaAlgorithm, classify: bool) -> Callable:
    """The mean over a stack's tasks of one task's pure meta-gradient, loss and accuracy (None for
    regression: ``classify`` False), as one pure function of detached meta-parameters and stacked tensors."""
    net = TaskNet(algorithm, pure=True)

    def one(params, sx, sy, qx, qy):
        grads, loss, acc = rules.pure_gradient(algorithm, net, params, Task(sx, sy, qx, qy))
        return (grads, loss, acc) if classify else (grads, loss)  # vmap maps tensors only

    def run(params, sx, sy, qx, qy):
        out = torch.func.vmap(one, in_dims=(None, 0, 0, 0, 0), randomness="same")(params, sx, sy, qx, qy)
        return [g.mean(0) for g in out[0]], out[1].mean(), out[2].mean() if classify else None
    return run


def vmap_part(algorithm: MetaAlgorithm, tasks: list[Task]) -> BatchGradient:
    """The mean meta-gradient of ``tasks`` (one stack), eagerly."""
    stack = batched.stack(tasks)
    params = {k: v.detach() for k, v in algorithm.named_meta_parameters().items()}
    grads, loss, acc = vmapped(algorithm, not stack.query_y.is_floating_point())(
        params, stack.support_x, stack.support_y, stack.query_x, stack.query_y)
    return BatchGradient(grads, loss.item(), None if acc is None else acc.item())


def vmap_gradient(algorithm: MetaAlgorithm, tasks: list[Task]) -> BatchGradient:
    """One task's torch.func gradient mapped over the meta-batch (looped where the tasks cannot be stacked)."""
    return batched.stack_gradient(algorithm, tasks, vmap_part) or looped.looped_gradient(algorithm, tasks)
