"""Inner loop on learn2learn's ``MAML`` wrapper (``clone()`` then ``adapt()``)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from metacompare._l2l import l2l
from metacompare.algorithms.backends import Adapted


def adapt(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable, lr: float, steps: int,
          second_order: bool) -> Adapted:
    learner = l2l.algorithms.MAML(model, lr=lr, first_order=not second_order).clone()
    for _ in range(steps):
        learner.adapt(loss_fn(learner(x), y))
    return Adapted(list(learner.parameters()), learner)
