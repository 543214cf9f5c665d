"""Reptile (Nichol, Achiam & Schulman 2018): move θ towards the weights θ̃ found on each task.

The task gradient is θ − θ̃, so an outer ``SGD(lr=ε)`` performs exactly θ ← θ + ε·mean(θ̃ − θ)
(the paper's batched update); an outer Adam receives the same vector as its gradient.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch

from metacompare.algorithms import register
from metacompare.algorithms.base import MetaAlgorithm, TaskGradient, accuracy, make_optimizer
from metacompare.data import Task


@register
class Reptile(MetaAlgorithm):
    name = "reptile"
    backends = ("metacompare", "learn2learn")

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        if cfg.backend == "learn2learn" and cfg.inner_optimizer != "sgd":
            from metacompare.config import ConfigError

            raise ConfigError("inner_optimizer: the learn2learn backend only takes SGD inner steps; "
                              "set inner_optimizer: sgd or backend: metacompare")
        # One scratch copy reused for every task: no per-task deepcopy (the seed code's main cost).
        self._scratch = copy.deepcopy(model)

    def _train_on(self, x: torch.Tensor, y: torch.Tensor, steps: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Plain training from θ on (x, y); returns the final weights and the last outputs."""
        if self.cfg.backend == "learn2learn":
            adapted = self.adapt_fn(self.model, x, y, self.loss_fn, self.cfg.inner_lr, steps, second_order=False)
            with torch.no_grad():
                return [p.detach() for p in adapted.params], adapted.predict(x)
        scratch = self._scratch
        with torch.no_grad():
            for mine, theirs in zip(scratch.parameters(), self.model.parameters()):
                mine.copy_(theirs)
        inner = make_optimizer(self.cfg.inner_optimizer, list(scratch.parameters()), self.cfg.inner_lr)
        for _ in range(steps):
            inner.zero_grad(set_to_none=True)
            self.loss_fn(scratch(x), y).backward()
            inner.step()
        with torch.no_grad():
            return [p.detach().clone() for p in scratch.parameters()], scratch(x)

    def task_gradient(self, task: Task) -> TaskGradient:
        # Reptile has no support/query distinction in training: it trains on all of the task's data.
        x, y = task.all_x, task.all_y
        adapted, outputs = self._train_on(x, y, self.cfg.inner_steps)
        grads = [theta.detach() - tilde for theta, tilde in zip(self.model.parameters(), adapted)]
        return TaskGradient(grads, self.loss_fn(outputs, y).item(), accuracy(outputs, y))

    def adapt(self, task: Task, steps: int) -> Callable[[torch.Tensor], torch.Tensor]:
        if self.cfg.backend == "learn2learn":
            return super().adapt(task, steps)
        self._train_on(task.support_x, task.support_y, steps)
        return self._scratch
