"""Reptile (Nichol, Achiam & Schulman 2018): move θ towards the weights θ̃ found on each task.

The task gradient is θ − θ̃, so an outer ``SGD(lr=ε)`` performs exactly θ ← θ + ε·mean(θ̃ − θ)
(the paper's batched update, Algorithm 2); ``outer_lr_final`` anneals ε linearly as supervised-reptile's
``meta_step_final`` does. Each training task is trained on all its examples (``train_shots`` per
class), in mini-batches of ``inner_batch_size`` (``inner_steps`` of them), with an inner optimiser whose
state may be carried from task to task (``inner_state: carry``, supervised-reptile's behaviour: it
resets only the model's variables between tasks, not Adam's moments and step count). ``inner_chains``
> 1 keeps that many carried chains, each over its share of the meta-batch, so that the meta-batch can be
split over processes (:mod:`metacompare.algorithms.chains`).
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import nn

from metacompare import compiled, grouped, inner
from metacompare.algorithms import chains
from metacompare.algorithms.registry import register
from metacompare.algorithms.base import BatchGradient, MetaAlgorithm, TaskGradient, as_batch
from metacompare.data import Task
from metacompare.runconfig import RunConfig


@register
class Reptile(MetaAlgorithm):
    name = "reptile"
    work_rule = "adapt_all"  # metacompare.budget.task_work
    backends = ("metacompare", "learn2learn")
    needs_query = False  # trains on all of a task's examples
    # the only algorithm that carries inner state across tasks; batched whole (no task_chunk)
    uses = frozenset({"inner_state", "inner_chains", "batch_tasks"})
    compilable = True

    def __init__(self, model: nn.Module, cfg: RunConfig):
        super().__init__(model, cfg)
        # inner_chains > 1: each chain's carried Adam state (None: not started); chain 0's is also
        # ``inner_state``, which test-time adaptation starts from
        self.chains: list[inner.AdamState | None] = [None] * cfg.inner_chains

    def task_gradient(self, task: Task) -> TaskGradient:
        # Reptile has no support/query distinction in training: it trains on all of the task's data.
        x, y = task.all_x, task.all_y
        if self.cfg.compile:
            return self.compiled_step(x, y)
        if self.cfg.backend == "learn2learn":
            adapted = self.adapt_fn(self.model, x, y, self.loss_fn, self.cfg.inner_lr, self.cfg.inner_steps,
                                    second_order=False)
            params = {k: p.detach() for k, p in zip(self.theta(), adapted.params)}
        else:
            carry = self.cfg.inner_state == "carry"
            step, state = self.chained_task_gradient(task, self.inner_state if carry else None)
            if carry:
                self.inner_state = state
            return step
        grads = [theta.detach() - params[k].detach() for k, theta in self.theta().items()]
        return TaskGradient(grads, *self.fit_summary(params, x, y))

    def chained_task_gradient(self, task: Task, state: inner.AdamState | None) -> tuple[TaskGradient, object]:
        """The task's gradient θ − θ̃ with the inner optimiser started from ``state`` (None: afresh), and
        the state it ends in (detached): one link of a carried chain."""
        x, y = task.all_x, task.all_y
        params, state = inner.adapt(self.forward, self.theta(), x, y, self.training_loop(), state)
        state = state.detached() if hasattr(state, "detached") else state
        grads = [theta.detach() - params[k].detach() for k, theta in self.theta().items()]
        return TaskGradient(grads, *self.fit_summary(params, x, y)), state

    def chained_stack_gradient(self, tasks: list[Task], states: list) -> tuple[list[torch.Tensor], float,
                                                                                  float | None, list]:
        """One link of several chains at once, in the grouped network: the sum over ``tasks`` of θ − θ̃,
        the mean fit loss and accuracy, and each chain's new state. ``states`` share one step count."""
        x, y = grouped.stack([t.all_x for t in tasks]), grouped.stack([t.all_y for t in tasks])
        def forward(params, inputs):
            return grouped.grouped_forward(self.model, params, inputs)
        params, state = inner.adapt(forward, grouped.stacked(self.theta(), len(tasks), track=False), x, y,
                                    self.training_loop(), chains.stack_states(states), stacked=True)
        loss, acc = self.stacked_fit_summary(forward, params, x, y)
        with torch.no_grad():
            sums = [len(tasks) * theta.detach() - params[k].detach().sum(0) for k, theta in self.theta().items()]
        return sums, loss, acc, chains.unstack_state(state.detached(), len(tasks))

    def meta_train_step(self, tasks: list[Task], engine: Callable | None = None) -> dict[str, float]:
        """With ``inner_chains`` > 1, the chains' engine (looped or batched as ``batch_tasks`` says)."""
        if engine is None and self.cfg.inner_chains > 1:
            engine = functools.partial(chains.chained_gradient, batched=self.cfg.batch_tasks)
        return super().meta_train_step(tasks, engine)

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.cfg.inner_chains > 1:
            state["inner_chains"] = [None if s is None else s.to_dict() for s in self.chains]
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if "inner_chains" in state:
            self.chains = [None if s is None else inner.AdamState.from_dict(s) for s in state["inner_chains"]]
            self.inner_state = self.chains[0]

    def batched_gradient(self, tasks: list[Task]) -> BatchGradient | None:
        """All tasks trained at once in one grouped network; not with a carried inner state, which
        makes each task start where the previous one ended."""
        if self.cfg.backend != "metacompare" or self.cfg.inner_state == "carry" or not grouped.same_shapes(tasks):
            return None
        x, y = grouped.stack([t.all_x for t in tasks]), grouped.stack([t.all_y for t in tasks])
        if self.cfg.compile:
            return as_batch(self.compiled_step(x, y, stacked=True))
        def forward(params, inputs):
            return grouped.grouped_forward(self.model, params, inputs)
        params, _ = inner.adapt(forward, grouped.stacked(self.theta(), len(tasks), track=False), x, y,
                                self.training_loop(), stacked=True)
        loss, acc = self.stacked_fit_summary(forward, params, x, y)
        with torch.no_grad():
            grads = [theta - params[k].mean(0) for k, theta in self.theta().items()]
        return BatchGradient([g.detach() for g in grads], loss, acc)

    def pure_gradient(self, theta: inner.Params, x: torch.Tensor, y: torch.Tensor, stacked: bool = False) -> tuple:
        """θ − θ̃ in ``torch.func`` (the mean over the stack's tasks when ``stacked``): what ``compile: true``
        compiles, for one task or the grouped network."""
        def forward(params, inputs):
            return grouped.grouped_forward(self.model, params, inputs) if stacked else self.forward(params, inputs)
        start = grouped.stacked(theta, len(x), track=True) if stacked else theta
        params, _ = inner.adapt(forward, start, x, y, self.training_loop(), stacked=stacked, pure=True)
        grads = [theta[k] - (params[k].mean(0) if stacked else params[k]) for k in theta]
        return grads, *compiled.fit_metrics(forward(params, x), y)
