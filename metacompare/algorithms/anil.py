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

from metacompare.algorithms import register
from metacompare.algorithms.base import MetaAlgorithm, TaskGradient, accuracy
from metacompare.backends.functional import sgd_steps
from metacompare.config import ConfigError
from metacompare.data import Task


@register
class ANIL(MetaAlgorithm):
    name = "anil"
    backends = ("metacompare",)

    def __init__(self, model: nn.Module, cfg):
        if not isinstance(model, nn.Sequential) or not isinstance(model[-1], nn.Linear):
            raise ConfigError("algorithm: anil adapts only a final linear layer; use model mlp, conv4 or "
                              "conv4_strided")
        super().__init__(model, cfg)
        self.body, self.head = model[:-1], model[-1]

    def _adapted_head(self, x: torch.Tensor, y: torch.Tensor, steps: int, second_order: bool) -> dict[str, torch.Tensor]:
        """Head weights after ``steps`` SGD steps on the body's features of (x, y)."""
        features = self.body(x)
        if not second_order:
            features = features.detach()
        head = dict(self.head.named_parameters())
        return sgd_steps(self.head, head, features, y, self.loss_fn, self.cfg.inner_lr, steps, second_order)

    def _predict(self, head: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.head, head, (self.body(x),))

    def task_gradient(self, task: Task) -> TaskGradient:
        head = self._adapted_head(task.support_x, task.support_y, self.cfg.inner_steps, second_order=True)
        outputs = self._predict(head, task.query_x)
        loss = self.loss_fn(outputs, task.query_y)
        grads = torch.autograd.grad(loss, self.meta_parameters())
        return TaskGradient(list(grads), loss.item(), accuracy(outputs.detach(), task.query_y))

    def adapt(self, task: Task, steps: int) -> Callable[[torch.Tensor], torch.Tensor]:
        head = {k: v.detach() for k, v in self._adapted_head(task.support_x, task.support_y, steps, False).items()}
        return lambda x: self._predict(head, x)
