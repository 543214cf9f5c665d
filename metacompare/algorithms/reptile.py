"""Reptile (Nichol, Achiam & Schulman 2018): move θ towards the weights θ̃ found on each task.

The task gradient is θ − θ̃, so an outer ``SGD(lr=ε)`` performs exactly θ ← θ + ε·mean(θ̃ − θ)
(the paper's batched update, Algorithm 2); ``outer_lr_final`` anneals ε linearly as supervised-reptile's
``meta_step_final`` does. Each training task is trained on all its examples (``train_shots`` per
class), in mini-batches of ``inner_batch_size`` (``inner_steps`` of them), with an inner optimiser whose
state may be carried from task to task (``inner_state: carry``, supervised-reptile's behaviour: it
resets only the model's variables between tasks, not Adam's moments and step count). ``inner_chains``
> 1 keeps that many carried chains, each over its share of the meta-batch, so that the meta-batch can be
split over processes (:mod:`metacompare.engines.chains`).
"""

from __future__ import annotations

from torch import nn

from metacompare.algorithms import inner
from metacompare.algorithms.registry import register
from metacompare.algorithms.base import DELTA, MetaAlgorithm, Net, Objective
from metacompare.data import Task
from metacompare.config.runconfig import RunConfig


@register
class Reptile(MetaAlgorithm):
    name = "reptile"
    work_rule = "adapt_all"  # metacompare.training.budget.task_work
    backends = ("metacompare", "learn2learn")
    needs_query = False  # trains on all of a task's examples
    # the only algorithm that carries inner state across tasks; batched whole (no task_chunk)
    uses = frozenset({"inner_state", "inner_chains", "batch_tasks", "vmap"})
    compilable = True

    def __init__(self, model: nn.Module, cfg: RunConfig):
        super().__init__(model, cfg)
        # inner_chains > 1: each chain's carried Adam state (None: not started), which the chains engine
        # (metacompare.engines.chains) keeps; chain 0's is also ``inner_state``, which test-time adaptation
        # starts from
        self.chains: list[inner.AdamState | None] = [None] * cfg.inner_chains

    def task_objective(self, net: Net, params: inner.Params, task: Task) -> Objective:
        """Train on all of the task's examples: Reptile has no support/query distinction in training."""
        adapted = net.adapt(net.forward, params, task.all_x, task.all_y, self.training_loop())
        return Objective(adapted, None, task.all_x, task.all_y)

    def gradient_rule(self) -> str:
        return DELTA

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
