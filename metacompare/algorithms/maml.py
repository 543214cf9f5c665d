"""MAML (Finn, Abbeel & Levine 2017) and its first-order variant (same paper, section 5.2).

One class: the meta-gradient is the query loss's gradient through the inner steps (MAML: second
order, Hessian-vector products included) or the same gradient taken at the adapted weights with the
Jacobian dθ̃/dθ taken as the identity (FOMAML). Both names are registered, and ``maml++``: MAML with
all of MAML++'s options on (Antoniou, Edwards & Storkey 2019; :mod:`metacompare.algorithms.maml_plus`),
which either class also takes one by one from the ``mamlpp`` config section. The objective is written
once, for one task (:meth:`MAML.task_objective`); the engines run it (:mod:`metacompare.engines`).
"""

from __future__ import annotations

from typing import Callable, ClassVar

import torch
from torch import nn

from metacompare.algorithms import inner
from metacompare.algorithms import maml_plus
from metacompare.algorithms.registry import register
from metacompare.algorithms.base import AT_ADAPTED, THROUGH, MetaAlgorithm, Net, Objective, adapted_names
from metacompare.data import Task
from metacompare.config.runconfig import MamlPlusPlusConfig


@register
class MAML(MetaAlgorithm):
    name = "maml"
    compilable = True
    uses = frozenset({"mamlpp", "batch_tasks", "task_chunk", "vmap"})
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

    def named_meta_parameters(self) -> inner.Params:
        """θ; with MAML++'s per-step tensors, those too (learned step sizes, then BatchNorm weights)."""
        if self.per_step is None:
            return self.theta()
        return {**self.theta(), **self.per_step.named_meta_parameters()}

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

    def _plus_objective(self, net: Net, params: inner.Params, task: Task) -> Objective:
        """MAML++'s objective; its gradient is taken with respect to all the meta-parameters.

        The loss is Σ_k w_k·L_query(θ_{k+1}) under the multi-step loss, else L_query(θ_N); step k's
        forward passes use step k's BatchNorm tensors and step sizes. First order keeps the update graph
        with constant step gradients (``cut=False``): ∂θ_{k+1}/∂θ_k = I (FOMAML), and ∂θ_{k+1}/∂α_k = −g_k.
        """
        per_step, tasks = self.per_step, net.tasks
        last = per_step.at_step(per_step.steps - 1, tasks, statistics=False)

        def forward(p: inner.Params, x: torch.Tensor) -> torch.Tensor:
            return net.forward({**last, **p}, x)
        loop = self.training_loop(self.second_order())
        loop.cut, loop.at_step = False, lambda k: per_step.at_step(k, tasks)
        if per_step.rates:
            loop.optimizer = per_step.optimizer()
        trace: list[inner.Params] = []
        adapted = net.adapt(forward, {k: params[k] for k in self.theta()}, task.support_x, task.support_y, loop,
                            trace=trace)
        weights = (maml_plus.msl_weights(len(trace), self.progress, self.options.msl_fraction)
                   if self.options.multi_step_loss else None)

        def loss(final: inner.Params) -> torch.Tensor:
            steps = list(enumerate(trace)) if weights is not None else [(len(trace) - 1, final)]
            return sum(w * inner.task_loss(forward({**p, **per_step.at_step(k, tasks)}, task.query_x), task.query_y).mean()
                       for w, (k, p) in zip(weights or [1.0], steps))
        return Objective(adapted, loss, task.support_x, task.support_y, forward)

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
    def task_objective(self, net: Net, params: inner.Params, task: Task) -> Objective:
        """Adapt on the support set; the query loss at the adapted weights (MAML, Finn et al. 2017, eq. 1)."""
        if self.per_step is not None:
            return self._plus_objective(net, params, task)
        adapted = net.adapt(net.forward, params, task.support_x, task.support_y, self.training_loop(self.second_order()))
        return Objective(adapted, lambda p: inner.task_loss(net.forward(p, task.query_x), task.query_y).mean(),
                         task.support_x, task.support_y)

    def gradient_rule(self) -> str:
        """MAML: ∇_θ L_query(θ̃(θ)); FOMAML (or DA's first-order phase): ∇_θ̃ L_query(θ̃), used as if it
        were ∇_θ. MAML++ always differentiates its graph (its step sizes need it; first order keeps it flat)."""
        return THROUGH if self.per_step is not None or self.second_order() else AT_ADAPTED


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
    uses = MAML.uses - {"vmap"}  # its per-step tensors are read from the object, not vmapped inputs
    config_defaults = {"outer_lr_schedule": "cosine", "outer_lr_final": 1e-5}
