"""Baseline ``scratch``: no meta-learning at all; every test task trains the network from one random init.

The network keeps the random initialisation drawn from ``seed``; evaluation takes ``steps`` SGD
steps (``inner_lr``) on the task's support set from there, exactly as the meta-learners adapt from
their learned θ. It is the floor the meta-learners have to beat: what the support set alone teaches.
"""

from __future__ import annotations

import torch

from metacompare.algorithms.registry import register
from metacompare.algorithms.base import MetaAlgorithm, TaskGradient, accuracy
from metacompare.data import Task


@register
class Scratch(MetaAlgorithm):
    name = "scratch"
    work_rule = "none"  # metacompare.budget.task_work

    def task_gradient(self, task: Task) -> TaskGradient:
        """Nothing carries over between tasks: a zero meta-gradient, and the unadapted query loss."""
        with torch.no_grad():
            outputs = self.model(task.query_x)
            loss = self.loss_fn(outputs, task.query_y).item()
        return TaskGradient([torch.zeros_like(p) for p in self.meta_parameters()], loss,
                            accuracy(outputs, task.query_y))

    def meta_train_step(self, tasks: list[Task], engine=None) -> dict[str, float]:
        """Leaves θ as initialised; returns the untrained network's query loss, so curves have a value."""
        steps = [self.task_gradient(task) for task in tasks]
        metrics = {"loss": sum(s.loss for s in steps) / len(steps)}
        accuracies = [s.accuracy for s in steps if s.accuracy is not None]
        if accuracies:
            metrics["accuracy"] = sum(accuracies) / len(accuracies)
        return metrics
