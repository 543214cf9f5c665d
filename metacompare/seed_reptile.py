"""The user's sample Reptile loop (document 003, section 5.2.2), kept as a reference to test and race against.

It deep-copies the model for every task and hands the meta-optimiser θ̃ − θ as the gradient, which
moves θ *away* from the adapted weights. ``fixed_sign=True`` hands it θ − θ̃ instead, which is
Reptile; that corrected version must match the ``reptile`` plug-in exactly.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn


def naive_reptile_step(model: nn.Module, tasks: list[tuple[torch.Tensor, torch.Tensor]],
                       meta_optim: torch.optim.Optimizer, inner_lr: float, inner_steps: int,
                       loss_fn: Callable, fixed_sign: bool = True) -> None:
    """One meta-iteration of the seed's loop: per task a fresh copy, ``inner_steps`` SGD steps."""
    deltas = []
    for x, y in tasks:
        task_model = copy.deepcopy(model)
        task_optim = torch.optim.SGD(task_model.parameters(), lr=inner_lr)
        for _ in range(inner_steps):
            task_optim.zero_grad()
            loss_fn(task_model(x), y).backward()
            task_optim.step()
        deltas.append([(p_task - p_meta).detach().clone()
                       for p_task, p_meta in zip(task_model.parameters(), model.parameters())])
    meta_grad = [sum(d) / len(d) for d in zip(*deltas)]
    for p, g in zip(model.parameters(), meta_grad):
        p.grad = -g if fixed_sign else g
    meta_optim.step()
