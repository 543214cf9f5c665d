"""MAML (Finn, Abbeel & Levine 2017): the meta-gradient flows back through the inner SGD steps."""

from __future__ import annotations

import torch

from metacompare.algorithms import register
from metacompare.algorithms.base import MetaAlgorithm, TaskGradient, accuracy
from metacompare.data import Task


@register
class MAML(MetaAlgorithm):
    name = "maml"

    def task_gradient(self, task: Task) -> TaskGradient:
        cfg = self.cfg
        adapted = self.adapt_fn(self.model, task.support_x, task.support_y, self.loss_fn,
                                cfg.inner_lr, cfg.inner_steps, second_order=True)
        outputs = adapted.predict(task.query_x)
        loss = self.loss_fn(outputs, task.query_y)
        # ∇_θ L_query(θ̃(θ)): second order, through the Hessian-vector products of the inner steps.
        grads = torch.autograd.grad(loss, self.meta_parameters())
        return TaskGradient(list(grads), loss.item(), accuracy(outputs.detach(), task.query_y))
