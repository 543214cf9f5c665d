"""Meta-SGD (Li, Zhou, Chen & Li 2017): MAML whose inner step size is learned, one per parameter entry.

The inner update is θ̃ = θ − α ⊙ ∇L_support(θ); the outer loop learns θ and α together from the query
loss after adaptation (second order, as in MAML). α starts at ``inner_lr`` everywhere, so the first
meta-step is exactly MAML's (the paper draws it at random from [0.005, 0.1]; a constant start keeps runs
comparable with MAML at the same ``inner_lr``). Each of ``inner_steps`` steps uses the same α.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.func import functional_call

from metacompare.algorithms import register
from metacompare.algorithms.base import MetaAlgorithm, TaskGradient, accuracy
from metacompare.data import Task


@register
class MetaSGD(MetaAlgorithm):
    name = "metasgd"
    backends = ("metacompare",)

    def __init__(self, model: nn.Module, cfg):
        # α must exist before the base class builds the outer optimiser over meta_parameters().
        self.inner_lrs = [torch.full_like(p, cfg.inner_lr).requires_grad_() for p in model.parameters()]
        super().__init__(model, cfg)

    def meta_parameters(self) -> list[torch.Tensor]:
        return list(self.model.parameters()) + self.inner_lrs

    def _adapted(self, x: torch.Tensor, y: torch.Tensor, steps: int, second_order: bool) -> dict[str, torch.Tensor]:
        """θ̃ after ``steps`` steps θ ← θ − α ⊙ ∇L(θ); differentiable in θ and α if second order."""
        params = dict(self.model.named_parameters())
        rates = self.inner_lrs if second_order else [a.detach() for a in self.inner_lrs]
        for _ in range(steps):
            loss = self.loss_fn(functional_call(self.model, params, (x,)), y)
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=second_order)
            params = {name: p - a * g for (name, p), a, g in zip(params.items(), rates, grads)}
        return params

    def task_gradient(self, task: Task) -> TaskGradient:
        params = self._adapted(task.support_x, task.support_y, self.cfg.inner_steps, second_order=True)
        outputs = functional_call(self.model, params, (task.query_x,))
        loss = self.loss_fn(outputs, task.query_y)
        grads = torch.autograd.grad(loss, self.meta_parameters())
        return TaskGradient(list(grads), loss.item(), accuracy(outputs.detach(), task.query_y))

    def adapt(self, task: Task, steps: int) -> Callable[[torch.Tensor], torch.Tensor]:
        params = {k: v.detach() for k, v in self._adapted(task.support_x, task.support_y, steps, False).items()}
        return lambda x: functional_call(self.model, params, (x,))

    def state_dict(self) -> dict:
        return {**super().state_dict(), "inner_lrs": [a.detach().clone() for a in self.inner_lrs]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            for mine, saved in zip(self.inner_lrs, state["inner_lrs"]):
                mine.copy_(saved)
