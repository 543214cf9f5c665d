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

from metacompare.algorithms import inner
from metacompare.algorithms.registry import register
from metacompare.algorithms.base import MetaAlgorithm, Net, Objective, linear_head
from metacompare.data import Task


@register
class ANIL(MetaAlgorithm):
    name = "anil"
    backends = ("metacompare",)
    uses = frozenset({"batch_tasks", "vmap"})

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

    def task_objective(self, net: Net, params: inner.Params, task: Task) -> Objective:
        """The head adapted on the body's features of the support set; the query loss through both."""
        prefix = f"{len(self.model) - 1}."  # the head's parameters in the model's names
        body = {k: v for k, v in params.items() if not k.startswith(prefix)}

        def features(x: torch.Tensor) -> torch.Tensor:
            return net.call(self.body, body, x)

        def head_forward(head: inner.Params, x: torch.Tensor) -> torch.Tensor:
            return net.call(self.head, head, x)
        loop = self.training_loop(second_order=True)
        loop.adapted = None  # the head's own parameters, all of them
        start = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
        head = net.adapt(head_forward, start, features(task.support_x), task.support_y, loop)

        def loss(adapted: inner.Params) -> torch.Tensor:
            final = {k[len(prefix):]: v for k, v in adapted.items() if k.startswith(prefix)}
            return inner.task_loss(head_forward(final, features(task.query_x)), task.query_y).mean()
        return Objective({**body, **{prefix + k: v for k, v in head.items()}}, loss, task.support_x, task.support_y)

    def adapt(self, task: Task, steps: int, procedure=None, generator=None) -> Callable[[torch.Tensor], torch.Tensor]:
        with torch.enable_grad():
            features = self.body(task.support_x).detach()
            head = self._adapted_head(features, task.support_y, self.evaluation_loop(steps, procedure))
        head = {k: v.detach() for k, v in head.items()}
        return lambda x: self._head_forward(head, self.body(x))

