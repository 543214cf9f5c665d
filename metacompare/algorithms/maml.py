"""MAML (Finn, Abbeel & Levine 2017) and its first-order variant (same paper, section 5.2).

One class: the meta-gradient is the query loss's gradient through the inner steps (MAML: second
order, Hessian-vector products included) or the same gradient taken at the adapted weights with the
Jacobian dθ̃/dθ taken as the identity (FOMAML). Both names are registered, and ``maml++``: MAML with
all of MAML++'s options on (Antoniou, Edwards & Storkey 2019; :mod:`metacompare.algorithms.maml_plus`),
which either class also takes one by one from the ``mamlpp`` config section.
"""

from __future__ import annotations

from typing import Callable, ClassVar

import torch
from torch import nn

from metacompare import compiled, grouped, inner
from metacompare.algorithms import maml_plus
from metacompare.algorithms.registry import register
from metacompare.algorithms.base import BatchGradient, MetaAlgorithm, TaskGradient, adapted_names, as_batch
from metacompare.data import Task
from metacompare.runconfig import MamlPlusPlusConfig


@register
class MAML(MetaAlgorithm):
    name = "maml"
    compilable = True
    uses = frozenset({"mamlpp", "batch_tasks", "task_chunk"})
    mamlpp_preset: ClassVar[MamlPlusPlusConfig] = maml_plus.OFF  # the options of ``mamlpp: null``

    def __init__(self, model: nn.Module, cfg):
        self.options = maml_plus.options_for(cfg, self.mamlpp_preset)
        # MAML++'s per-step tensors must exist before the base class builds the outer optimiser.
        self.per_step = (maml_plus.PerStep(model, cfg, self.options, adapted_names(model))
                         if maml_plus.needs_graph(self.options) else None)
        super().__init__(model, cfg)
        if self.per_step is not None:
            self.adapted = self.per_step.adapted

    # ------------------------------------------------------------------------------ MAML++
    def theta(self) -> inner.Params:
        """θ; with per-step BatchNorm weights, less the layers' own, which those replace."""
        params = super().theta()
        if self.per_step is None or not self.per_step.replaced:
            return params
        return {k: v for k, v in params.items() if k not in self.per_step.replaced}

    def meta_parameters(self) -> list[torch.Tensor]:
        if getattr(self, "per_step", None) is None:
            return super().meta_parameters()
        return list(self.theta().values()) + self.per_step.meta_parameters()

    def forward(self, params: inner.Params, x: torch.Tensor) -> torch.Tensor:
        """The network at ``params``; with per-step BatchNorm weights, the last step's unless ``params``
        names a step's own (the inner loop's ``at_step``)."""
        if self.per_step is not None and self.per_step.norm_params:
            params = {**self.per_step.at_step(self.per_step.steps - 1, statistics=False), **params}
        return super().forward(params, x)

    def second_order(self) -> bool:
        """This iteration's derivative order: MAML's second order, after ``first_order_fraction`` of
        training under derivative-order annealing (DA); FOMAML's first order throughout."""
        return not self.first_order and maml_plus.second_order_now(self.progress, self.options)

    def _plus_gradient(self, forward: Callable, start: inner.Params, sx: torch.Tensor, sy: torch.Tensor,
                       qx: torch.Tensor, qy: torch.Tensor, stacked: bool) -> tuple[list[torch.Tensor], inner.Params]:
        """MAML++'s meta-gradient with respect to :meth:`meta_parameters`, and the adapted parameters.

        The loss is Σ_k w_k·L_query(θ_{k+1}) under the multi-step loss, else L_query(θ_N); step k's
        forward passes use step k's BatchNorm tensors and step sizes. First order keeps the update graph
        with constant step gradients (``cut=False``): ∂θ_{k+1}/∂θ_k = I (FOMAML), and ∂θ_{k+1}/∂α_k = −g_k.
        """
        per_step, tasks = self.per_step, len(sx) if stacked else 0
        loop = self.training_loop(self.second_order())
        loop.cut, loop.at_step = False, lambda k: per_step.at_step(k, tasks)
        if per_step.rates:
            loop.optimizer = per_step.optimizer()
        trace: list[inner.Params] = []
        params, _ = inner.adapt(forward, start, sx, sy, loop, stacked=stacked, trace=trace)
        weights = (maml_plus.msl_weights(len(trace), self.progress, self.options.msl_fraction)
                   if self.options.multi_step_loss else None)
        steps = list(enumerate(trace)) if weights is not None else [(len(trace) - 1, params)]
        weights = weights if weights is not None else [1.0]
        loss = sum(w * inner.task_loss(forward({**p, **per_step.at_step(k, tasks)}, qx), qy).mean()
                   for w, (k, p) in zip(weights, steps))
        wrt = self.meta_parameters()
        grads = torch.autograd.grad(loss, wrt, allow_unused=True)
        return [torch.zeros_like(t) if g is None else g for t, g in zip(wrt, grads)], params

    def _plus_task_gradient(self, task: Task) -> TaskGradient:
        grads, params = self._plus_gradient(self.forward, self.theta(), task.support_x, task.support_y,
                                            task.query_x, task.query_y, stacked=False)
        return TaskGradient(grads, *self.fit_summary(params, task.support_x, task.support_y))

    def adapt(self, task: Task, steps: int, procedure=None, generator=None) -> Callable[[torch.Tensor], torch.Tensor]:
        """Test-time adaptation; under MAML++ with the learned step sizes (unless a common ``procedure``
        replaces the optimiser) and each step's BatchNorm tensors, normalising with their statistics."""
        per_step = self.per_step
        if per_step is None:
            return super().adapt(task, steps, procedure, generator)
        loop = self.evaluation_loop(steps, procedure)
        if procedure is None and per_step.rates:
            loop.optimizer = per_step.optimizer(detached=True)
        loop.at_step = lambda k: {n: t.detach() for n, t in per_step.at_step(k).items()}
        with torch.enable_grad(), per_step.using_statistics(True):
            params, _ = inner.adapt(self.forward, self.theta(), task.support_x, task.support_y, loop,
                                    generator=generator)
        final = {**{k: v.detach() for k, v in params.items()}, **loop.at_step(steps - 1)}

        def predict(x: torch.Tensor) -> torch.Tensor:
            with per_step.using_statistics(True):
                return self.forward(final, x)
        return predict

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.per_step is not None:
            state["per_step"] = self.per_step.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self.per_step is not None:
            self.per_step.load_state_dict(state["per_step"])

    # ------------------------------------------------------------------------------ MAML

    def _adapt_for_training(self, task: Task) -> inner.Params:
        """θ̃ after the training inner loop on the support set (on the configured backend)."""
        cfg = self.cfg
        if cfg.backend != "metacompare":  # learn2learn's MAML wrapper or higher: plain SGD steps
            adapted = self.adapt_fn(self.model, task.support_x, task.support_y, self.loss_fn, cfg.inner_lr,
                                    cfg.inner_steps, second_order=self.second_order())
            return dict(zip(self.theta(), adapted.params))
        params, _ = inner.adapt(self.forward, self.theta(), task.support_x, task.support_y,
                                self.training_loop(second_order=self.second_order()))
        return params

    def task_gradient(self, task: Task) -> TaskGradient:
        if self.cfg.compile:
            return self.compiled_step(task.support_x, task.support_y, task.query_x, task.query_y)
        if self.per_step is not None:
            return self._plus_task_gradient(task)
        params = self._adapt_for_training(task)
        loss = self.loss_fn(self.forward(params, task.query_x), task.query_y)
        # MAML: ∇_θ L_query(θ̃(θ)); FOMAML (or DA's first-order phase): ∇_θ̃ L_query(θ̃), used as if it were ∇_θ.
        first_order = not self.second_order()
        wrt = list(params.values()) if first_order else self.meta_parameters()
        grads = torch.autograd.grad(loss, wrt)
        return TaskGradient(list(grads), *self.fit_summary(params, task.support_x, task.support_y))

    def batched_gradient(self, tasks: list[Task]) -> BatchGradient | None:
        """All tasks adapted in one grouped network (:mod:`metacompare.grouped`)."""
        if self.cfg.backend != "metacompare" or not grouped.same_shapes(tasks):
            return None
        if self.per_step is not None and self.per_step.norm_stats:  # running statistics do not batch
            return None
        chunk = self.cfg.task_chunk or len(tasks)
        parts = [self._batched_part(tasks[i:i + chunk]) for i in range(0, len(tasks), chunk)]
        return _weighted_mean(parts)

    def _batched_part(self, tasks: list[Task]) -> tuple[int, BatchGradient]:
        sx, sy = grouped.stack([t.support_x for t in tasks]), grouped.stack([t.support_y for t in tasks])
        qx, qy = grouped.stack([t.query_x for t in tasks]), grouped.stack([t.query_y for t in tasks])
        if self.cfg.compile:
            return len(tasks), as_batch(self.compiled_step(sx, sy, qx, qy, stacked=True))
        if self.per_step is not None:
            last = self.per_step.at_step(self.per_step.steps - 1, len(tasks))
            def forward(params, x):
                return grouped.grouped_forward(self.model, {**last, **params}, x)
            start = grouped.stacked(self.theta(), len(tasks), track=True)
            grads, params = self._plus_gradient(forward, start, sx, sy, qx, qy, stacked=True)
            loss, acc = self.stacked_fit_summary(forward, params, sx, sy)
            return len(tasks), BatchGradient(grads, loss, acc)
        def forward(params, x):
            return grouped.grouped_forward(self.model, params, x)
        first_order = not self.second_order()
        start = grouped.stacked(self.theta(), len(tasks), track=not first_order)
        params, _ = inner.adapt(forward, start, sx, sy, self.training_loop(not first_order), stacked=True)
        losses = inner.task_loss(forward(params, qx), qy)
        wrt = list(params.values()) if first_order else self.meta_parameters()
        grads = torch.autograd.grad(losses.mean(), wrt)
        if first_order:  # Σ_t ∂(mean_t L_t)/∂θ̃_t = mean_t ∇L_t(θ̃_t)
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


@register
class MAMLPlusPlus(MAML):
    """MAML++ (Antoniou, Edwards & Storkey 2019, "How to train your MAML"): MAML with MSL, BNRS, BNWB, LSLR
    and DA at the paper's values, and cosine annealing of the outer step (CA).

    The options are :data:`~metacompare.algorithms.maml_plus.PRESET` unless the config has a ``mamlpp``
    section; an experiment file gets CA (outer Adam annealed to 1e-5) unless it sets the schedule itself.
    """

    name = "maml++"
    mamlpp_preset = maml_plus.PRESET
    backends = ("metacompare",)
    compilable = False
    config_defaults = {"outer_lr_schedule": "cosine", "outer_lr_final": 1e-5}


def _weighted_mean(parts: list[tuple[int, BatchGradient]]) -> BatchGradient:
    """The mean over all tasks of chunks' means, each weighted by its number of tasks."""
    total = sum(n for n, _ in parts)
    grads = [sum(n * r.grads[i] for n, r in parts) / total for i in range(len(parts[0][1].grads))]
    loss = sum(n * r.loss for n, r in parts) / total
    acc = None if parts[0][1].accuracy is None else sum(n * r.accuracy for n, r in parts) / total
    return BatchGradient(grads, loss, acc)
