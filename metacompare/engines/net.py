"""The :class:`~metacompare.algorithms.base.Net` an engine hands an algorithm's objective.

One class: what differs between engines is only how the network is called (``functional_call`` on one
task's parameters, or the grouped network of :mod:`metacompare.models.grouped` on a stack of them), whether the
inner loop's step gradients come from ``torch.autograd`` or ``torch.func`` (``pure``, for ``vmap`` and
``torch.compile``), and whether an inner optimiser state is carried in and out (Reptile's ``carry``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from metacompare.models import grouped

from metacompare.algorithms import inner


@dataclass
class TaskNet:
    """The network and inner loop of one engine, for ``algorithm``.

    ``tasks``: 0 for one task's tensors, T for a stack (the grouped network); ``pure``: step gradients by
    ``torch.func`` (inside ``vmap`` or a compiled graph); ``carry``: :meth:`adapt` starts from ``state``,
    the carried inner optimiser state (None: afresh), and leaves there the state it ends in (else every
    adaptation starts afresh); ``off``: the setting that turns the grouped network off, named in its errors.
    """

    algorithm: Any
    tasks: int = 0
    pure: bool = False
    carry: bool = False
    state: Any = None
    off: str = "batch_tasks: false"

    def forward(self, params: inner.Params, x: torch.Tensor) -> torch.Tensor:
        if self.tasks:
            return grouped.grouped_forward(self.algorithm.model, params, x, self.off)
        return self.algorithm.forward(params, x)

    def call(self, module: nn.Module, params: inner.Params, x: torch.Tensor) -> torch.Tensor:
        if self.tasks:
            return grouped.grouped_forward(module, params, x, self.off)
        return functional_call(module, params, (x,))

    def adapt(self, forward: inner.Forward, params: inner.Params, x: torch.Tensor, y: torch.Tensor,
              loop: inner.InnerLoop, trace: list | None = None) -> inner.Params:
        cfg = self.algorithm.cfg
        if cfg.backend != "metacompare":  # learn2learn's MAML wrapper or higher: plain SGD steps on the model
            adapted = self.algorithm.adapt_fn(self.algorithm.model, x, y, self.algorithm.loss_fn, cfg.inner_lr,
                                              cfg.inner_steps, second_order=loop.second_order)
            return dict(zip(params, adapted.params))
        params, state = inner.adapt(forward, params, x, y, loop, self.state if self.carry else None,
                                    stacked=bool(self.tasks), pure=self.pure, trace=trace)
        if self.carry:
            self.state = state.detached() if hasattr(state, "detached") else state
        return params
