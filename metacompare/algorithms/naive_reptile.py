"""The sample Reptile loop from the user's tutorial article (its section 5.2.2) as two comparison rows.

The sample loop deep-copies the model for every task, takes ``inner_steps`` SGD steps on the task's data
and hands the meta-optimiser (Adam) the mean of θ̃ − θ as the *gradient*. An optimiser steps against
its gradient, so θ moves away from the adapted weights θ̃: the sign is reversed with respect to
Reptile (Nichol, Achiam & Schulman 2018, Algorithm 2), which moves θ towards them.

- ``naive_reptile``: the loop as written, task gradient θ̃ − θ.
- ``naive_reptile_fixed``: the same loop with the sign fixed, task gradient θ − θ̃; with SGD inner
  steps it equals the ``reptile`` plug-in exactly, but pays for a deep copy per task.

:func:`naive_reptile_step` is the whole sample loop as one function, which ``bench`` races.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from metacompare.algorithms.registry import register
from metacompare.algorithms import inner
from metacompare.algorithms.base import DELTA, MetaAlgorithm, Net, Objective
from metacompare.data import Task


def naive_task_delta(model: nn.Module, x: torch.Tensor, y: torch.Tensor, inner_lr: float, inner_steps: int,
                    loss_fn: Callable) -> tuple[list[torch.Tensor], nn.Module]:
    """θ̃ − θ after the sample loop's adaptation on (x, y), and the adapted copy of the model.

    As the sample loop does it: a fresh ``copy.deepcopy`` of the model and a fresh ``SGD`` for every task.
    """
    task_model = copy.deepcopy(model)
    task_optim = torch.optim.SGD(task_model.parameters(), lr=inner_lr)
    for _ in range(inner_steps):
        task_optim.zero_grad()
        loss_fn(task_model(x), y).backward()
        task_optim.step()
    with torch.no_grad():
        deltas = [(p_task - p_meta).detach().clone()
                  for p_task, p_meta in zip(task_model.parameters(), model.parameters())]
    return deltas, task_model


def naive_reptile_step(model: nn.Module, tasks: list[tuple[torch.Tensor, torch.Tensor]],
                       meta_optim: torch.optim.Optimizer, inner_lr: float, inner_steps: int,
                       loss_fn: Callable, fixed_sign: bool = True) -> None:
    """One meta-iteration of the sample loop; ``fixed_sign=False`` keeps its reversed sign."""
    deltas = [naive_task_delta(model, x, y, inner_lr, inner_steps, loss_fn)[0] for x, y in tasks]
    meta_grad = [sum(d) / len(d) for d in zip(*deltas)]
    for p, g in zip(model.parameters(), meta_grad):
        p.grad = -g if fixed_sign else g
    meta_optim.step()


@register
class NaiveReptile(MetaAlgorithm):
    """The sample loop as written: the outer optimiser receives θ̃ − θ (sign reversed)."""

    name = "naive_reptile"
    # The training step is the sample loop itself; test-time adaptation is the shared inner loop (SGD
    # at inner_lr on the support set, what the sample loop does), so one backend is enough.
    backends = ("metacompare",)
    needs_query = False  # like Reptile, the sample loop trains on all of a task's examples
    delta_sign = -1.0  # the task gradient is −(θ − θ̃) = θ̃ − θ
    # The sample loop's inner loop is full-batch SGD on the mean loss from a fresh copy: the protocol knobs
    # that would change it are refused (validation) rather than silently ignored.
    requires = {"inner_optimizer": "sgd", "inner_batch_size": 0, "inner_loss": "mean"}
    requires_why = "runs the sample loop's own inner loop (full-batch SGD on the mean loss, fresh per task)"

    def task_objective(self, net: Net, params: inner.Params, task: Task) -> Objective:
        """The sample loop's adaptation, on a deep copy of the model (whose parameters are ``params`` on
        the looped engine, the only one it declares); like Reptile, on all of the task's data."""
        x, y = task.all_x, task.all_y
        _, adapted = naive_task_delta(self.model, x, y, self.cfg.inner_lr, self.cfg.inner_steps, self.loss_fn)
        return Objective(dict(adapted.named_parameters()), None, x, y)

    def gradient_rule(self) -> str:
        return DELTA


@register
class NaiveReptileFixed(NaiveReptile):
    """The sample loop with the sign fixed: the outer optimiser receives θ − θ̃, which is Reptile."""

    name = "naive_reptile_fixed"
    delta_sign = 1.0
