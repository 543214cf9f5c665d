"""Baseline ``scratch``: no meta-learning at all; every test task trains the network from one random init.

The network keeps the random initialisation drawn from ``seed``; evaluation takes ``steps`` SGD
steps (``inner_lr``) on the task's support set from there, exactly as the meta-learners adapt from
their learned θ. It is the floor the meta-learners have to beat: what the support set alone teaches.
"""

from __future__ import annotations

import torch

from metacompare.algorithms import inner
from metacompare.algorithms.registry import register
from metacompare.algorithms.base import DELTA, MetaAlgorithm, Net, Objective
from metacompare.data import Task


@register
class Scratch(MetaAlgorithm):
    name = "scratch"
    work_rule = "none"  # metacompare.training.budget.task_work

    def task_objective(self, net: Net, params: inner.Params, task: Task) -> Objective:
        """Nothing is adapted (θ − θ̃ = 0: a zero meta-gradient); the logged fit is the unadapted query
        loss, so that curves have a value."""
        return Objective(params, None, task.query_x, task.query_y)

    def gradient_rule(self) -> str:
        return DELTA

    def outer_update(self, grads: list[torch.Tensor]) -> None:
        """Leaves θ as initialised (and the outer optimiser's state as it is)."""
