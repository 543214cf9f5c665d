"""MAML (Finn, Abbeel & Levine 2017) and its first-order variant (same paper, section 5.2).

One class: the meta-gradient is the query loss's gradient through the inner steps (MAML: second
order, Hessian-vector products included) or the same gradient taken at the adapted weights with the
Jacobian dθ̃/dθ taken as the identity (FOMAML). Both names are registered.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from metacompare import compiled, grouped, inner
from metacompare.algorithms.registry import register
from metacompare.algorithms.base import BatchGradient, MetaAlgorithm, TaskGradient, as_batch
from metacompare.data import Task


@register
class MAML(MetaAlgorithm):
    name = "maml"
    first_order: ClassVar[bool] = False
    compilable = True

    def _adapt_for_training(self, task: Task) -> inner.Params:
        """θ̃ after the training inner loop on the support set (on the configured backend)."""
        cfg = self.cfg
        if cfg.backend != "metacompare":  # learn2learn's MAML wrapper or higher: plain SGD steps
            adapted = self.adapt_fn(self.model, task.support_x, task.support_y, self.loss_fn, cfg.inner_lr,
                                    cfg.inner_steps, second_order=not self.first_order)
            return dict(zip(self.theta(), adapted.params))
        params, _ = inner.adapt(self.forward, self.theta(), task.support_x, task.support_y,
                                self.training_loop(second_order=not self.first_order))
        return params

    def task_gradient(self, task: Task) -> TaskGradient:
        if self.cfg.compile:
            return self.compiled_step(task.support_x, task.support_y, task.query_x, task.query_y)
        params = self._adapt_for_training(task)
        loss = self.loss_fn(self.forward(params, task.query_x), task.query_y)
        # MAML: ∇_θ L_query(θ̃(θ)); FOMAML: ∇_θ̃ L_query(θ̃), used as if it were ∇_θ.
        wrt = list(params.values()) if self.first_order else self.meta_parameters()
        grads = torch.autograd.grad(loss, wrt)
        return TaskGradient(list(grads), *self.fit_summary(params, task.support_x, task.support_y))

    def batched_gradient(self, tasks: list[Task]) -> BatchGradient | None:
        """All tasks adapted in one grouped network (:mod:`metacompare.grouped`)."""
        if self.cfg.backend != "metacompare" or not grouped.same_shapes(tasks):
            return None
        chunk = self.cfg.task_chunk or len(tasks)
        parts = [self._batched_part(tasks[i:i + chunk]) for i in range(0, len(tasks), chunk)]
        return _weighted_mean(parts)

    def _batched_part(self, tasks: list[Task]) -> tuple[int, BatchGradient]:
        sx, sy = grouped.stack([t.support_x for t in tasks]), grouped.stack([t.support_y for t in tasks])
        qx, qy = grouped.stack([t.query_x for t in tasks]), grouped.stack([t.query_y for t in tasks])
        if self.cfg.compile:
            return len(tasks), as_batch(self.compiled_step(sx, sy, qx, qy, stacked=True))
        def forward(params, x):
            return grouped.grouped_forward(self.model, params, x)
        start = grouped.stacked(self.theta(), len(tasks), track=not self.first_order)
        params, _ = inner.adapt(forward, start, sx, sy, self.training_loop(not self.first_order), stacked=True)
        losses = inner.task_loss(forward(params, qx), qy)
        wrt = list(params.values()) if self.first_order else self.meta_parameters()
        grads = torch.autograd.grad(losses.mean(), wrt)
        if self.first_order:  # Σ_t ∂(mean_t L_t)/∂θ̃_t = mean_t ∇L_t(θ̃_t)
            grads = [g.sum(0) for g in grads]
        loss, acc = self.stacked_fit_summary(forward, params, sx, sy)
        return len(tasks), BatchGradient(list(grads), loss, acc)

    def pure_gradient(self, theta: inner.Params, sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor,
                      qy: torch.Tensor, stacked: bool = False) -> tuple:
        """:meth:`task_gradient` (or, ``stacked``, :meth:`_batched_part`) in ``torch.func``: MAML is
        ``grad`` of the query loss through the pure inner loop, FOMAML ``grad`` at its result."""
        def forward(params, x):
            return grouped.grouped_forward(self.model, params, x) if stacked else self.forward(params, x)
        def query_loss(params):
            return inner.task_loss(forward(params, qx), qy).mean()
        def adapted(start):
            start = grouped.stacked(start, len(sx), track=True) if stacked else start
            return inner.adapt(forward, start, sx, sy, self.training_loop(not self.first_order),
                               stacked=stacked, pure=True)[0]
        if self.first_order:  # Σ_t ∂(mean_t L_t)/∂θ̃_t = mean_t ∇L_t(θ̃_t)
            params = adapted(theta)
            grads = {k: g.sum(0) if stacked else g for k, g in torch.func.grad(query_loss)(params).items()}
        else:
            def loss_and_adapted(start):
                params = adapted(start)
                return query_loss(params), params
            grads, params = torch.func.grad(loss_and_adapted, has_aux=True)(theta)
        return [grads[k] for k in theta], *compiled.fit_metrics(forward(params, sx), sy)


@register
class FOMAML(MAML):
    name = "fomaml"
    first_order = True


def _weighted_mean(parts: list[tuple[int, BatchGradient]]) -> BatchGradient:
    """The mean over all tasks of chunks' means, each weighted by its number of tasks."""
    total = sum(n for n, _ in parts)
    grads = [sum(n * r.grads[i] for n, r in parts) / total for i in range(len(parts[0][1].grads))]
    loss = sum(n * r.loss for n, r in parts) / total
    acc = None if parts[0][1].accuracy is None else sum(n * r.accuracy for n, r in parts) / total
    return BatchGradient(grads, loss, acc)
