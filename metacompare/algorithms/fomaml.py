"""First-order MAML (Finn et al. 2017, section 5.2): the query gradient taken at the adapted weights."""

from __future__ import annotations

import torch

from metacompare.algorithms import register
from metacompare.algorithms.base import MetaAlgorithm, TaskGradient, accuracy
from metacompare.data import Task


@register
class FOMAML(MetaAlgorithm):
    name = "fomaml"

    def task_gradient(self, task: Task) -> TaskGradient:
        cfg = self.cfg
        adapted = self.adapt_fn(self.model, task.support_x, task.support_y, self.loss_fn,
                                cfg.inner_lr, cfg.inner_steps, second_order=False)
        outputs = adapted.predict(task.query_x)
        loss = self.loss_fn(outputs, task.query_y)
        # ∇_θ̃ L_query(θ̃), used as if it were ∇_θ: the Jacobian dθ̃/dθ is taken to be the identity.
        grads = torch.autograd.grad(loss, adapted.params)
        return TaskGradient(list(grads), loss.item(), accuracy(outputs.detach(), task.query_y))
