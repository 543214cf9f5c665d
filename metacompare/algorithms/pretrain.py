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

from metacompare.algorithms import inner
from metacompare.algorithms.registry import register
from metacompare.algorithms.base import MetaAlgorithm, Net, Objective, linear_head
from metacompare.data import Task
from metacompare.data.source import classifies


@register
class Pretrain(MetaAlgorithm):
    name = "pretrain"
    work_rule = "supervised"  # metacompare.training.budget.task_work
    needs_query = False  # trains on all of a task's examples
    uses_num_classes = True  # build_algorithm passes the training split's class count

    def __init__(self, model: nn.Module, cfg, num_classes: int | None = None):
        self.head: nn.Linear | None = None
        if classifies(cfg):
            last = linear_head(model, self.name)
            if not num_classes:
                raise ValueError("pretrain needs num_classes (the training split's class count) for classification")
            self.head = nn.Linear(last.in_features, num_classes).to(device=last.weight.device, dtype=last.weight.dtype)
        super().__init__(model, cfg)

    @property
    def body(self) -> nn.Module:
        return self.model[:-1]

    def named_meta_parameters(self) -> inner.Params:
        if self.head is None:
            return self.theta()
        # The model's own ways-output layer is never trained: every test task gets a fresh head.
        return {**dict(self.body.named_parameters()), **{f"head.{k}": v for k, v in self.head.named_parameters()}}

    def task_objective(self, net: Net, params: inner.Params, task: Task) -> Objective:
        """No adaptation: the supervised loss on all of the task's examples, with the dataset-wide labels
        under the all-class head; its gradient (through θ, the default rule) is the plain one."""
        x, y = task.all_x, task.all_y
        if self.head is None:
            return Objective(params, lambda p: inner.task_loss(net.forward(p, x), y).mean(), x, y)
        if task.classes is None:
            raise ValueError("pretrain needs Task.classes, the dataset-wide class of each task label")
        y = task.classes.to(y.device)[y]

        def classify(p: inner.Params, inputs: torch.Tensor) -> torch.Tensor:
            body = {k: v for k, v in p.items() if not k.startswith("head.")}
            head = {k[len("head."):]: v for k, v in p.items() if k.startswith("head.")}
            return net.call(self.head, head, net.call(self.body, body, inputs))
        return Objective(params, lambda p: inner.task_loss(classify(p, x), y).mean(), x, y, classify)

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
