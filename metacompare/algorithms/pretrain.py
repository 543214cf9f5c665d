"""Baseline ``pretrain``: ordinary supervised training on the meta-training data, then fine-tuning.

Classification: one classifier over every meta-training class (a head of ``num_classes`` outputs on
the model's body) is trained on the pooled examples of each meta-batch with their dataset-wide labels
(``Task.classes``). A test task gets a new ``ways``-output head, zero-initialised and trained with
``steps`` SGD steps (``inner_lr``) on the body's features of its support set; the body stays as
pretrained. This is the "Baseline" of Chen et al. (2019, "A Closer Look at Few-shot Classification").
Regression (sine): the network is trained jointly on all tasks' data and fine-tuned whole on the
support set, the "pretrained" baseline of Finn, Abbeel & Levine (2017, section 5.1).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from metacompare import inner
from metacompare.algorithms.registry import register
from metacompare.algorithms.base import MetaAlgorithm, TaskGradient, accuracy, linear_head
from metacompare.data import Task


@register
class Pretrain(MetaAlgorithm):
    name = "pretrain"
    work_rule = "supervised"  # metacompare.budget.task_work
    needs_query = False  # trains on all of a task's examples
    uses_num_classes = True  # build_algorithm passes the training split's class count

    def __init__(self, model: nn.Module, cfg, num_classes: int | None = None):
        self.head: nn.Linear | None = None
        if cfg.is_classification:
            last = linear_head(model, self.name)
            if not num_classes:
                raise ValueError("pretrain needs num_classes (the training split's class count) for classification")
            self.head = nn.Linear(last.in_features, num_classes).to(device=last.weight.device, dtype=last.weight.dtype)
        super().__init__(model, cfg)

    @property
    def body(self) -> nn.Module:
        return self.model[:-1]

    def meta_parameters(self) -> list[torch.Tensor]:
        if self.head is None:
            return list(self.model.parameters())
        # The model's own ways-output layer is never trained: every test task gets a fresh head.
        return [*self.body.parameters(), *self.head.parameters()]

    def task_gradient(self, task: Task) -> TaskGradient:
        """Gradient of the supervised loss on all of the task's examples; the base class averages them."""
        x, y = task.all_x, task.all_y
        if self.head is None:
            outputs = self.model(x)
        else:
            if task.classes is None:
                raise ValueError("pretrain needs Task.classes, the dataset-wide class of each task label")
            y = task.classes.to(y.device)[y]
            outputs = self.head(self.body(x))
        loss = self.loss_fn(outputs, y)
        grads = torch.autograd.grad(loss, self.meta_parameters())
        return TaskGradient(list(grads), loss.item(), accuracy(outputs.detach(), y))

    def adapt(self, task: Task, steps: int, procedure=None, generator=None) -> Callable[[torch.Tensor], torch.Tensor]:
        if self.head is None:
            return super().adapt(task, steps, procedure, generator)
        with torch.no_grad():
            features = self.body(task.support_x)
        head = {"weight": features.new_zeros(self.cfg.ways, features.shape[1], requires_grad=True),
                "bias": features.new_zeros(self.cfg.ways, requires_grad=True)}
        loop = self.evaluation_loop(steps, procedure)
        loop.adapted = None
        with torch.enable_grad():
            head, _ = inner.adapt(_linear, head, features, task.support_y, loop, generator=generator)
        head = {k: v.detach() for k, v in head.items()}
        return lambda x: _linear(head, self.body(x))

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.head is not None:
            state["head"] = self.head.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self.head is not None:
            self.head.load_state_dict(state["head"])


def _linear(head: inner.Params, features: torch.Tensor) -> torch.Tensor:
    return F.linear(features, head["weight"], head["bias"])
