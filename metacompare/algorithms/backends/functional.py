"""metacompare's own inner loop: ``torch.func.functional_call`` over a dict of tensors.

No module copies (unlike learn2learn's ``clone``) and no monkey-patched module (unlike higher):
the model is called with substituted parameters, and each step is one ``autograd.grad``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.func import functional_call

from metacompare.algorithms.backends import Adapted


def sgd_steps(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
              loss_fn: Callable, lr: float, steps: int, second_order: bool) -> dict[str, torch.Tensor]:
    """θ ← θ − lr·∇L(θ) ``steps`` times; the graph through the gradients is kept only if second order."""
    for _ in range(steps):
        loss = loss_fn(functional_call(model, params, (x,)), y)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=second_order)
        params = {name: p - lr * g for (name, p), g in zip(params.items(), grads)}
    return params


def adapt(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable, lr: float, steps: int,
          second_order: bool) -> Adapted:
    params = dict(model.named_parameters())
    adapted = sgd_steps(model, params, x, y, loss_fn, lr, steps, second_order)
    return Adapted(list(adapted.values()), lambda inputs: functional_call(model, adapted, (inputs,)))
