"""The one interface every meta-learner implements.

The algorithm holds its hyperparameters, the model (whose parameters are the meta-parameters θ) and
the outer optimiser. A plug-in fills in :meth:`MetaAlgorithm.task_gradient`: its contribution to the
meta-gradient from one task. :meth:`meta_train_step` averages those over the meta-batch, writes them
to ``.grad`` and steps the outer optimiser, so every algorithm's outer update happens in one place.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from metacompare.backends import BACKENDS, fast, get_adapt
from metacompare.config import RunConfig
from metacompare.data import Task


@dataclass
class TaskGradient:
    """One task's contribution to the meta-gradient, and the loss/accuracy seen while computing it."""

    grads: list[torch.Tensor]
    loss: float
    accuracy: float | None = None


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float | None:
    """Fraction of correct predictions, or None for regression outputs."""
    if targets.is_floating_point():
        return None
    return (outputs.argmax(dim=-1) == targets).float().mean().item()


def predict_query(predict: Callable[[torch.Tensor], torch.Tensor], support_x: torch.Tensor,
                  query_x: torch.Tensor, mode: str = "transductive") -> torch.Tensor:
    """Outputs for the query set under an evaluation mode (transduction: Nichol et al. 2018).

    ``transductive``: the query set is one batch, so BatchNorm normalises with its statistics and
    each prediction depends on the other query examples (the MAML and Reptile code). ``non_transductive``:
    as supervised-reptile does it, each query example is appended to the support set alone and only its
    row is kept, so BatchNorm sees the support set plus that one example and nothing else of the query.
    """
    if mode == "transductive":
        return predict(query_x)
    return torch.cat([predict(torch.cat([support_x, q[None]]))[-1:] for q in query_x])


def make_optimizer(name: str, params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    # beta1 = 0 is what supervised-reptile uses; the MAML code uses Adam's defaults. Defaults here.
    return torch.optim.Adam(params, lr=lr)


class MetaAlgorithm(ABC):
    """A meta-learner: meta-train on batches of tasks; adapt to a new task and predict."""

    name: ClassVar[str]
    backends: ClassVar[tuple[str, ...]] = BACKENDS

    def __init__(self, model: nn.Module, cfg: RunConfig):
        self.model, self.cfg = model, cfg
        self.loss_fn: Callable = F.cross_entropy if cfg.is_classification else F.mse_loss
        self.adapt_fn = get_adapt(cfg.backend)
        self.outer_optimizer = make_optimizer(cfg.outer_optimizer, self.meta_parameters(), cfg.outer_lr)

    def meta_parameters(self) -> list[torch.Tensor]:
        """The tensors the outer optimiser updates (Meta-SGD-like plug-ins add their own)."""
        return list(self.model.parameters())

    @abstractmethod
    def task_gradient(self, task: Task) -> TaskGradient:
        """This task's contribution to the meta-gradient, parallel to :meth:`meta_parameters`."""

    def meta_train_step(self, tasks: list[Task]) -> dict[str, float]:
        """One outer update from a meta-batch: θ ← outer_optimizer(θ, mean of task gradients)."""
        with fast.autocast(self.cfg):  # a no-op unless precision: bfloat16
            batch = fast.batched_meta_gradient(self, tasks) if self.cfg.batch_tasks else None
            if batch is None:
                batch = self.looped_meta_gradient(tasks)
        self.outer_optimizer.zero_grad(set_to_none=True)
        for p, g in zip(self.meta_parameters(), batch.grads):
            p.grad = g
        self.outer_optimizer.step()
        metrics = {"loss": batch.loss}
        if batch.accuracy is not None:
            metrics["accuracy"] = batch.accuracy
        return metrics

    def looped_meta_gradient(self, tasks: list[Task]) -> fast.BatchGradient:
        """The mean of :meth:`task_gradient` over ``tasks``, one task at a time."""
        total = [torch.zeros_like(p) for p in self.meta_parameters()]
        losses, accuracies = [], []
        for task in tasks:
            step = self.task_gradient(task)
            for acc, g in zip(total, step.grads):
                acc.add_(g)
            losses.append(step.loss)
            if step.accuracy is not None:
                accuracies.append(step.accuracy)
        return fast.BatchGradient([g / len(tasks) for g in total], sum(losses) / len(losses),
                                  sum(accuracies) / len(accuracies) if accuracies else None)

    def adapt(self, task: Task, steps: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """Fine-tune on the support set; return a predictor with the adapted weights."""
        adapted = self.adapt_fn(self.model, task.support_x, task.support_y, self.loss_fn,
                                self.cfg.inner_lr, steps, second_order=False)
        return adapted.predict

    def evaluate(self, task: Task, steps: int) -> tuple[float, float | None]:
        """Query loss and accuracy after ``steps`` adaptation steps on the support set."""
        predict = self.adapt(task, steps)
        with torch.no_grad():
            outputs = predict_query(predict, task.support_x, task.query_x, self.cfg.evaluation)
            return self.loss_fn(outputs, task.query_y).item(), accuracy(outputs, task.query_y)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "outer_optimizer": self.outer_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.outer_optimizer.load_state_dict(state["outer_optimizer"])
