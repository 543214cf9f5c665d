"""ANIL (Raghu, Raghu, Bengio & Vinyals 2020, "Rapid Learning or Feature Reuse?"): MAML with the inner
loop on the final linear layer (the head) only.

The body is a fixed feature extractor within a task and learns only in the outer loop, so the inner
loop is a few steps of logistic (or linear) regression on the body's features; the meta-gradient is
still second order, and reaches the body through the features that the head was adapted on.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.func import functional_call

from metacompare import inner
from metacompare.algorithms.registry import register
from metacompare.algorithms.base import MetaAlgorithm, TaskGradient, accuracy, linear_head
from metacompare.data import Task


@register
class ANIL(MetaAlgorithm):
    name = "anil"
    backends = ("metacompare",)

    def __init__(self, model: nn.Module, cfg):
        head = linear_head(model, self.name)
        super().__init__(model, cfg)
        self.body, self.head = model[:-1], head

    def _head_forward(self, head: inner.Params, features: torch.Tensor) -> torch.Tensor:
        return functional_call(self.head, head, (features,))

    def _adapted_head(self, features: torch.Tensor, y: torch.Tensor, loop: inner.InnerLoop) -> inner.Params:
        """Head weights after the inner loop on the body's features of the support set."""
        loop.adapted = None  # the head's own parameters, all of them
        head, _ = inner.adapt(self._head_forward, dict(self.head.named_parameters()), features, y, loop)
        return head

    def task_gradient(self, task: Task) -> TaskGradient:
        head = self._adapted_head(self.body(task.support_x), task.support_y, self.training_loop(second_order=True))
        outputs = self._head_forward(head, self.body(task.query_x))
        loss = self.loss_fn(outputs, task.query_y)
        grads = torch.autograd.grad(loss, self.meta_parameters())
        fit = self._head_forward(head, self.body(task.support_x))
        fit = fit.detach()
        return TaskGradient(list(grads), self.loss_fn(fit, task.support_y).item(), accuracy(fit, task.support_y))

    def adapt(self, task: Task, steps: int, procedure=None, generator=None) -> Callable[[torch.Tensor], torch.Tensor]:
        with torch.enable_grad():
            features = self.body(task.support_x).detach()
            head = self._adapted_head(features, task.support_y, self.evaluation_loop(steps, procedure))
        head = {k: v.detach() for k, v in head.items()}
        return lambda x: self._head_forward(head, self.body(x))

