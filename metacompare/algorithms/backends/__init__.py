"""Differentiable inner loops, one module per library, all with the same ``adapt`` signature.

``adapt(model, x, y, loss_fn, lr, steps, second_order)`` takes ``steps`` plain SGD steps on
``(x, y)`` from the model's current parameters θ and returns an :class:`Adapted`: the adapted
parameters θ̃ (a list parallel to ``model.parameters()``) and a function that predicts with them.
With ``second_order=True`` θ̃ stays differentiable with respect to θ through every step (MAML);
otherwise the step gradients are constants, so ∂(query loss)/∂θ̃ is the first-order MAML gradient.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import nn

BACKENDS = ("metacompare", "learn2learn", "higher")


@dataclass
class Adapted:
    params: list[torch.Tensor]
    predict: Callable[[torch.Tensor], torch.Tensor]


class AdaptFn(Protocol):
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable,
                 lr: float, steps: int, second_order: bool) -> Adapted: ...


def get_adapt(backend: str) -> AdaptFn:
    """The ``adapt`` function of a backend, imported on first use."""
    module = {"metacompare": "functional", "learn2learn": "l2l", "higher": "higher_loop"}[backend]
    return importlib.import_module(f"metacompare.algorithms.backends.{module}").adapt
