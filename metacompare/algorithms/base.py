"""The one interface every meta-learner implements.

The algorithm holds its hyperparameters, the model (whose parameters are the meta-parameters θ) and
the outer optimiser. A plug-in states its meta-gradient once, for one task: :meth:`MetaAlgorithm.task_objective`
adapts the task's parameters and returns the query loss as a function of them (an :class:`Objective`), and
:meth:`MetaAlgorithm.gradient_rule` says which gradient of it the meta-gradient is: through the
adaptation (MAML), at the adapted weights (FOMAML), or the step θ − θ̃ itself (Reptile). The engines of
:mod:`metacompare.engines` apply it: one task after another, all tasks in one grouped network, under
``torch.func.vmap``, compiled, or over processes; they hand the plug-in a :class:`Net` (how to run the
network and the inner loop on their tensors), so no plug-in knows which engine runs it.
:meth:`meta_train_step` writes the engine's mean to ``.grad`` and steps the outer optimiser, so every
algorithm's outer update happens in one place. Adaptation, in training and at test time, goes through
the one inner loop of :mod:`metacompare.algorithms.inner`.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Iterator, Mapping, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from metacompare.algorithms import inner

from metacompare.models import precision
from metacompare.algorithms.backends import BACKENDS, get_adapt
from metacompare.config.runconfig import EvalProcedure, MamlPlusPlusConfig, RunConfig
from metacompare.data import Task
from metacompare.data.source import classifies


@dataclass
class TaskGradient:
    """One task's contribution to the meta-gradient, and the loss/accuracy seen while computing it."""

    grads: list[torch.Tensor]
    loss: float
    accuracy: float | None = None


@dataclass
class BatchGradient:
    """The mean meta-gradient of a meta-batch, and the mean loss/accuracy seen computing it."""

    grads: list[torch.Tensor]
    loss: float
    accuracy: float | None


# The three meta-gradients a plug-in may declare (:meth:`MetaAlgorithm.gradient_rule`).
THROUGH = "through"  # ∇_θ L_query(θ̃(θ)), through the adaptation (MAML, second order)
AT_ADAPTED = "at_adapted"  # ∇_θ̃ L_query(θ̃), used as if it were ∇_θ (FOMAML: the Jacobian dθ̃/dθ taken as I)
DELTA = "delta"  # θ − θ̃, which an outer SGD(lr=ε) turns into Reptile's interpolation (no query loss)
RULES = (THROUGH, AT_ADAPTED, DELTA)


class Net(Protocol):
    """What an engine hands :meth:`MetaAlgorithm.task_objective`: the network and the inner loop, run on
    the engine's tensors. For one task (looped, ``vmap``, compiled) the parameters are θ's own shapes;
    for the grouped network every tensor, parameters and data, has a leading task axis of ``tasks``."""

    tasks: int  # 0: one task's tensors; T: a stack of T tasks (the grouped network)

    def forward(self, params: inner.Params, x: torch.Tensor) -> torch.Tensor:
        """The algorithm's network (:meth:`MetaAlgorithm.forward`) at ``params``."""

    def call(self, module: nn.Module, params: inner.Params, x: torch.Tensor) -> torch.Tensor:
        """A part of the network (ANIL's body or head) at ``params``, named as that module names them."""

    def adapt(self, forward: inner.Forward, params: inner.Params, x: torch.Tensor, y: torch.Tensor,
              loop: inner.InnerLoop, trace: list | None = None) -> inner.Params:
        """:func:`metacompare.algorithms.inner.adapt` on these tensors: the adapted parameters."""


@dataclass
class Objective:
    """One task's training objective, as :meth:`MetaAlgorithm.task_objective` states it.

    ``adapted``: the parameters after the inner loop. ``loss``: the query loss as a function of them
    (None under the ``delta`` rule). ``fit_x``/``fit_y``: the examples the logged training fit is
    measured on, by ``predict`` (default: the network) at ``adapted``.
    """

    adapted: inner.Params
    loss: Callable[[inner.Params], torch.Tensor] | None
    fit_x: torch.Tensor
    fit_y: torch.Tensor
    predict: inner.Forward | None = None


Engine = Callable[["MetaAlgorithm", list[Task]], BatchGradient]
_ENGINE_FOR: list[Callable[[RunConfig], Engine]] = []


def install_engines(engine_for: Callable[[RunConfig], Engine]) -> None:
    """How a config chooses its engine, installed by :mod:`metacompare.engines` when it is imported: the
    engines know the algorithms, not the other way round, so this module never imports them."""
    _ENGINE_FOR[:] = [engine_for]


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float | None:
    """Fraction of correct predictions, or None for regression outputs."""
    if targets.is_floating_point():
        return None
    return (outputs.argmax(dim=-1) == targets).float().mean().item()


def predict_query(predict: Callable[[torch.Tensor], torch.Tensor], support_x: torch.Tensor,
                  query_x: torch.Tensor, mode: str = "transductive", axis: int = 0) -> torch.Tensor:
    """Outputs for the query set under an evaluation mode (transduction: Nichol et al. 2018).

    ``transductive``: the query set is one batch, so BatchNorm normalises with its statistics and
    each prediction depends on the other query examples (the MAML and Reptile code). ``non_transductive``:
    as supervised-reptile does it, each query example is appended to the support set alone and only its
    row is kept, so BatchNorm sees the support set plus that one example and nothing else of the query.
    ``axis``: the examples' axis (1 for episodes stacked ``[T, N, ...]``, each with its own support set).
    """
    if mode == "transductive":
        return predict(query_x)
    rows = []
    for i in range(query_x.shape[axis]):
        out = predict(torch.cat([support_x, query_x.narrow(axis, i, 1)], axis))
        rows.append(out.narrow(axis, out.shape[axis] - 1, 1))
    return torch.cat(rows, axis)


def cosine_rate(initial: float, final: float, fraction_done: float) -> float:
    """final + (initial − final)·(1 + cos πf)/2: torch's ``CosineAnnealingLR`` at epoch f·T_max, which
    MAML++ steps once per epoch (T_max the number of epochs, η_min 1e-5); here f moves every iteration."""
    return final + (initial - final) * (1 + math.cos(math.pi * fraction_done)) / 2


def make_optimizer(name: str, params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """The outer optimiser (torch's own: it steps θ in place)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    return torch.optim.Adam(params, lr=lr)


def adapted_names(model: nn.Module) -> tuple[str, ...]:
    """Parameters the inner loop adapts: all but those of modules marked ``inner_loop_frozen``
    (Finn et al.'s BatchNorm offsets live outside their ``weights`` dict and are learned in the
    outer loop only)."""
    frozen = {f"{prefix}.{name}" if prefix else name
              for prefix, module in model.named_modules() if getattr(module, "inner_loop_frozen", False)
              for name, _ in module.named_parameters(recurse=False)}
    return tuple(name for name, _ in model.named_parameters() if name not in frozen)


def linear_head(model: nn.Module, algorithm: str) -> nn.Linear:
    """The network's final linear layer (ANIL adapts it, pretrain replaces it). Not a config check: every
    network a config can name ends in one (tests/test_capabilities.py), so a miss is a programming error."""
    if not isinstance(model, nn.Sequential) or not isinstance(model[-1], nn.Linear):
        raise TypeError(f"{algorithm} needs an nn.Sequential ending in an nn.Linear layer, got {type(model).__name__}")
    return model[-1]


@contextmanager
def training_mode(model: nn.Module) -> Iterator[None]:
    """The model in training mode for one meta-training step, its own mode restored after: ResNet-12's
    DropBlock acts in meta-training only (test-time adaptation and prediction run without it). BatchNorm
    without running statistics, the only kind here, computes the same in either mode."""
    was = model.training
    model.train()
    try:
        yield
    finally:
        model.train(was)


class MetaAlgorithm(ABC):
    """A meta-learner: meta-train on batches of tasks; adapt to a new task and predict."""

    # What a plug-in is, declared here with its default and read as a plain attribute everywhere
    # (validation, build, budget, catalogue): a subclass overrides only what differs.
    name: ClassVar[str]  # the config's ``algorithm:`` value; no default
    # The backends (inner-loop libraries) it runs on; default: all of them.
    backends: ClassVar[tuple[str, ...]] = BACKENDS
    # The optional config fields (validation.OPTIONAL_FIELDS) it reads; others must stay at their default.
    uses: ClassVar[frozenset[str]] = frozenset()
    # Config fields it runs at one value only, and why (its own fixed inner loop); another value is refused.
    requires: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    requires_why: ClassVar[str] = ""
    # How a training task's work is counted, a declaration the budget reads (metacompare.training.budget.task_work):
    # adapt_then_query, adapt_all, supervised or none; second order unless ``first_order``.
    work_rule: ClassVar[str] = "adapt_then_query"
    # The meta-gradient is first order throughout (FOMAML); default False.
    first_order: ClassVar[bool] = False
    # Training scores the adapted weights on query examples, so ``query: 0`` is refused; default True.
    needs_query: ClassVar[bool] = True
    # The constructor takes ``num_classes``, the training split's class count (pretrain's head); default False.
    uses_num_classes: ClassVar[bool] = False
    # Whether its objective is pure ``torch.func`` code that ``compile: true`` can trace whole
    # (metacompare.engines.compiled); default False. The engines it runs on beyond the looped one are the
    # optional fields ``batch_tasks`` and ``vmap`` in ``uses``.
    compilable: ClassVar[bool] = False
    # Under the ``delta`` rule, the task gradient is delta_sign·(θ − θ̃); default 1 (Reptile).
    delta_sign: ClassVar[float] = 1.0
    # MAML++'s options when the config has no ``mamlpp`` section; None (default): it has none.
    mamlpp_preset: ClassVar[MamlPlusPlusConfig | None] = None
    # Config fields an experiment file gives it unless the file sets them (config.expand); default none.
    config_defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({})

    def __init__(self, model: nn.Module, cfg: RunConfig):
        self.model, self.cfg = model, cfg
        self.loss_fn: Callable = F.cross_entropy if classifies(cfg) else F.mse_loss
        self.adapt_fn = get_adapt(cfg.backend)
        self.adapted = adapted_names(model)
        self.outer_optimizer = make_optimizer(cfg.outer_optimizer, self.meta_parameters(), cfg.outer_lr)
        self.inner_state: Any = None  # the inner optimiser's state when it is carried across tasks
        self._logging = [0.0, 0.0]  # wall and CPU seconds spent on the logged training fit (logging_fit)
        self.measure_fit = True  # this iteration's logged fit is measured (the runner: every fit_interval)
        self.progress = 0.0  # fraction of training done, set each iteration by set_outer_lr

    # ------------------------------------------------------------------------------ the network
    def forward(self, params: inner.Params, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, params, (x,))

    def theta(self) -> inner.Params:
        return dict(self.model.named_parameters())

    def named_meta_parameters(self) -> inner.Params:
        """The tensors the outer optimiser updates, by name: θ (:meth:`theta`), and those a plug-in adds
        (Meta-SGD's step sizes). Engines differentiate :meth:`task_objective` with respect to these."""
        return self.theta()

    def meta_parameters(self) -> list[torch.Tensor]:
        return list(self.named_meta_parameters().values())

    def training_loop(self, second_order: bool = False) -> inner.InnerLoop:
        """The inner loop of meta-training, as the config describes it."""
        cfg = self.cfg
        return inner.InnerLoop(inner.make_inner_optimizer(cfg.inner_optimizer, cfg.inner_lr, cfg.inner_betas),
                               cfg.inner_steps, cfg.inner_batch_size, second_order, cfg.inner_loss,
                               cfg.train_shots or cfg.shots, self.adapted)

    def evaluation_loop(self, steps: int, procedure: EvalProcedure | None = None) -> inner.InnerLoop:
        """The test-time inner loop: the algorithm's own (its training optimiser, ``eval_inner_batch_size``)
        or a common ``procedure`` shared by every algorithm of a comparison."""
        cfg = self.cfg
        if procedure is None:
            optimizer = inner.make_inner_optimizer(cfg.inner_optimizer, cfg.inner_lr, cfg.inner_betas)
            batch = cfg.eval_inner_batch_size
        else:
            optimizer = inner.make_inner_optimizer(procedure.optimizer, procedure.lr, procedure.betas)
            batch = procedure.batch_size
        return inner.InnerLoop(optimizer, steps, batch, False, cfg.inner_loss, cfg.shots, self.adapted)

    # ------------------------------------------------------------------------------ training
    @abstractmethod
    def task_objective(self, net: Net, params: inner.Params, task: Task) -> Objective:
        """One task's objective: adapt on the task with ``net``, from ``params`` (the named meta-parameters,
        :meth:`named_meta_parameters`), and return the adapted parameters and the query loss as a function
        of them. The one statement of the algorithm's training maths; every engine runs it."""

    def gradient_rule(self) -> str:
        """Which gradient of :meth:`task_objective` the meta-gradient is (:data:`RULES`): through the
        adaptation, or, for a first-order plug-in, at the adapted weights."""
        return AT_ADAPTED if self.first_order else THROUGH

    def meta_train_step(self, tasks: list[Task], engine: Engine | None = None) -> dict[str, float]:
        """One outer update from a meta-batch: θ ← outer_optimizer(θ, mean of task gradients), the mean
        computed by ``engine`` (default: the one the config chooses, :func:`metacompare.engines.engine_for`)."""
        if engine is None:
            if not _ENGINE_FOR:
                raise RuntimeError("no engine is installed: import metacompare.engines before training")
            engine = _ENGINE_FOR[0](self.cfg)
        with precision.autocast(self.cfg), training_mode(self.model):  # autocast: a no-op unless bfloat16
            batch = engine(self, tasks)
        self.outer_update(batch.grads)
        if not self.measure_fit:  # an engine that measures inside its graph still reports; not logged
            return {}
        metrics = {"loss": batch.loss}
        if batch.accuracy is not None:
            metrics["accuracy"] = batch.accuracy
        return metrics

    def outer_update(self, grads: list[torch.Tensor]) -> None:
        """θ ← outer_optimizer(θ, ``grads``), the gradients parallel to :meth:`meta_parameters`."""
        self.outer_optimizer.zero_grad(set_to_none=True)
        for p, g in zip(self.meta_parameters(), grads):
            p.grad = g
        self.outer_optimizer.step()

    def replay_draws(self, task: Task) -> None:
        """Draw from torch's global RNG what the looped engine draws for ``task`` (its training inner
        loop's mini-batch shuffles), without the work: a process that leaves the task to another stays on
        the one-process random stream (:mod:`metacompare.engines.parallel`)."""
        examples = {"adapt_then_query": task.support_y, "adapt_all": task.all_y}.get(self.work_rule)
        if examples is None or self.cfg.backend != "metacompare":
            return
        loop = self.training_loop()
        for _ in inner.mini_batches(len(examples), loop.batch_size, loop.steps):
            pass

    def set_outer_lr(self, fraction_done: float) -> None:
        """Anneal the outer step from ``outer_lr`` to ``outer_lr_final`` with ``f`` the fraction of training
        done: linearly (Reptile's ``meta_step_final``: lr = f·final + (1 − f)·initial), or along a cosine
        (``outer_lr_schedule: cosine``, MAML++'s CA, Antoniou et al. 2019; see :func:`cosine_rate`).
        Also records ``f`` as :attr:`progress`, which MAML++'s schedules read."""
        self.progress = fraction_done
        final = self.cfg.outer_lr_final
        if self.cfg.outer_lr_schedule == "cosine":
            rate = cosine_rate(self.cfg.outer_lr, final or 0.0, fraction_done)
        elif final is None:
            return
        else:
            rate = fraction_done * final + (1 - fraction_done) * self.cfg.outer_lr
        for group in self.outer_optimizer.param_groups:
            group["lr"] = rate

    @contextmanager
    def logging_fit(self) -> Iterator[None]:
        """Times the extra forward pass that measures the logged training fit, without gradients. It is
        measurement, not training: it is reported (:meth:`take_logging_seconds`) and the budget leaves it
        out (:meth:`metacompare.training.budget.BudgetMeter.charge`), as it leaves out validation. Unequal
        otherwise: it costs Reptile (one forward over all its 50 training images per task) about 17% of
        its training time on omniglot_minimal, the MAML family less; the authors' code computes its training accuracies only on its print iterations."""
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            with torch.no_grad():
                yield
        finally:
            self._logging[0] += time.perf_counter() - wall
            self._logging[1] += time.process_time() - cpu

    def take_logging_seconds(self) -> tuple[float, float]:
        """Wall and CPU seconds spent in :meth:`logging_fit` since the last call (the budget's, once per
        iteration). A compiled step (``compile: true``) measures its fit inside its graph, uncounted here."""
        spent, self._logging = tuple(self._logging), [0.0, 0.0]
        return spent

    # ------------------------------------------------------------------------------ test time
    def adapt(self, task: Task, steps: int, procedure: EvalProcedure | None = None,
              generator: torch.Generator | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
        """Fine-tune on the support set; return a predictor with the adapted weights. A carried inner
        optimiser state is used as it stands and left unchanged (supervised-reptile restores it)."""
        state = self.inner_state if procedure is None else None
        with torch.enable_grad():
            params, _ = inner.adapt(self.forward, self.theta(), task.support_x, task.support_y,
                                    self.evaluation_loop(steps, procedure), state, generator)
        params = {k: v.detach() for k, v in params.items()}
        return lambda x: self.forward(params, x)

    def evaluate(self, task: Task, steps: int, procedure: EvalProcedure | None = None,
                 generator: torch.Generator | None = None) -> tuple[float, float | None]:
        """Query loss and accuracy after ``steps`` adaptation steps on the support set."""
        predict = self.adapt(task, steps, procedure, generator)
        with torch.no_grad():
            outputs = predict_query(predict, task.support_x, task.query_x, self.cfg.evaluation)
            return self.loss_fn(outputs, task.query_y).item(), accuracy(outputs, task.query_y)

    # ------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        state = {"model": self.model.state_dict(), "outer_optimizer": self.outer_optimizer.state_dict()}
        if isinstance(self.inner_state, inner.AdamState):
            state["inner_state"] = self.inner_state.to_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.outer_optimizer.load_state_dict(state["outer_optimizer"])
        if "inner_state" in state:
            self.inner_state = inner.AdamState.from_dict(state["inner_state"])
