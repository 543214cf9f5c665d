"""Reptile (Nichol, Achiam & Schulman 2018): move θ towards the weights θ̃ found on each task.

The task gradient is θ − θ̃, so an outer ``SGD(lr=ε)`` performs exactly θ ← θ + ε·mean(θ̃ − θ)
(the paper's batched update, Algorithm 2); ``outer_lr_final`` anneals ε linearly as supervised-reptile's
``meta_step_final`` does. Each training task is trained on all its examples (``train_shots`` per
class), in mini-batches of ``inner_batch_size`` (``inner_steps`` of them), with an inner optimiser whose
state may be carried from task to task (``inner_state: carry``, supervised-reptile's behaviour: it
resets only the model's variables between tasks, not Adam's moments and step count).
"""

from __future__ import annotations

import torch

from metacompare import compiled, grouped, inner
from metacompare.algorithms.registry import register
from metacompare.algorithms.base import BatchGradient, MetaAlgorithm, TaskGradient, as_batch
from metacompare.data import Task


@register
class Reptile(MetaAlgorithm):
    name = "reptile"
    work_rule = "adapt_all"  # metacompare.budget.task_work
    backends = ("metacompare", "learn2learn")
    needs_query = False  # trains on all of a task's examples
    uses = frozenset({"inner_state"})  # the only algorithm that carries inner state across tasks
    compilable = True

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
            params, state = inner.adapt(self.forward, self.theta(), x, y, self.training_loop(),
                                        self.inner_state if carry else None)
            if carry:
                self.inner_state = state.detached() if hasattr(state, "detached") else state
        grads = [theta.detach() - params[k].detach() for k, theta in self.theta().items()]
        return TaskGradient(grads, *self.fit_summary(params, x, y))

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
