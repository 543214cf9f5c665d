"""Inner loop on ``higher.innerloop_ctx`` with a differentiable SGD optimiser."""

from __future__ import annotations

from typing import Callable

import higher
import torch
from torch import nn

from metacompare.algorithms.backends import Adapted


def adapt(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable, lr: float, steps: int,
          second_order: bool) -> Adapted:
    inner = torch.optim.SGD(model.parameters(), lr=lr)
    # copy_initial_weights=False: θ̃ must depend on the model's own θ for the meta-gradient to reach it.
    with higher.innerloop_ctx(model, inner, copy_initial_weights=False,
                              track_higher_grads=second_order) as (fmodel, diffopt):
        for _ in range(steps):
            diffopt.step(loss_fn(fmodel(x), y))
    return Adapted(list(fmodel.parameters()), fmodel)
