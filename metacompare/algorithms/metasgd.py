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

from metacompare.algorithms import inner
from metacompare.algorithms.registry import register
from metacompare.algorithms.base import MetaAlgorithm, Net, Objective
from metacompare.data import Task


@register
class MetaSGD(MetaAlgorithm):
    name = "metasgd"
    backends = ("metacompare",)
    uses = frozenset({"batch_tasks", "vmap"})

    def __init__(self, model: nn.Module, cfg):
        # α must exist before the base class builds the outer optimiser over meta_parameters().
        self.inner_lrs = [torch.full_like(p, cfg.inner_lr).requires_grad_() for p in model.parameters()]
        super().__init__(model, cfg)

    def named_meta_parameters(self) -> inner.Params:
        """θ and α, one step size per entry of each parameter (``inner_lr.<name>``)."""
        return {**self.theta(), **{f"inner_lr.{k}": a for k, a in zip(self.theta(), self.inner_lrs)}}

    def _loop(self, steps: int, second_order: bool) -> inner.InnerLoop:
        """Plain SGD with the learned α; differentiable in θ and α if second order."""
        names = [name for name, _ in self.model.named_parameters()]
        rates = {k: a if second_order else a.detach() for k, a in zip(names, self.inner_lrs)}
        loop = self.training_loop(second_order)
        loop.optimizer, loop.steps = inner.SGD(rates), steps
        return loop

    def task_objective(self, net: Net, params: inner.Params, task: Task) -> Objective:
        """θ̃ = θ − α ⊙ ∇L_support(θ) per step; the query loss at θ̃, differentiable in θ and α."""
        theta = {k: params[k] for k in self.theta()}
        loop = self.training_loop(second_order=True)
        loop.optimizer = inner.SGD({k: params[f"inner_lr.{k}"] for k in theta})
        adapted = net.adapt(net.forward, theta, task.support_x, task.support_y, loop)
        return Objective(adapted, lambda p: inner.task_loss(net.forward(p, task.query_x), task.query_y).mean(),
                         task.support_x, task.support_y)

    def adapt(self, task: Task, steps: int, procedure=None, generator=None) -> Callable[[torch.Tensor], torch.Tensor]:
        if procedure is not None:  # a common test procedure replaces the learned α too
            return super().adapt(task, steps, procedure, generator)
        with torch.enable_grad():
            params, _ = inner.adapt(self.forward, self.theta(), task.support_x, task.support_y,
                                    self._loop(steps, second_order=False), generator=generator)
        params = {k: v.detach() for k, v in params.items()}
        return lambda x: self.forward(params, x)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "inner_lrs": [a.detach().clone() for a in self.inner_lrs]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            for mine, saved in zip(self.inner_lrs, state["inner_lrs"]):
                mine.copy_(saved)
