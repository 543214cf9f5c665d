"""The one interface every meta-learner implements.

The algorithm holds its hyperparameters, the model (whose parameters are the meta-parameters θ) and
the outer optimiser. A plug-in fills in :meth:`MetaAlgorithm.task_gradient`: its contribution to the
meta-gradient from one task. :meth:`meta_train_step` averages those over the meta-batch, writes them
to ``.grad`` and steps the outer optimiser, so every algorithm's outer update happens in one place.
Adaptation, in training and at test time, goes through the one inner loop of :mod:`metacompare.inner`.
"""

from __future__ import annotations

import functools
import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from metacompare import batch_eval, compiled, distributed, inner, precision
from metacompare.backends import BACKENDS, get_adapt
from metacompare.runconfig import EvalProcedure, MamlPlusPlusConfig, RunConfig
from metacompare.data import Task


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


def as_batch(step: TaskGradient) -> BatchGradient:
    """A stack's result (the compiled batched step returns its means as one TaskGradient)."""
    return BatchGradient(step.grads, step.loss, step.accuracy)


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
    # How a training task's work is counted, a declaration the budget reads (metacompare.budget.task_work):
    # adapt_then_query, adapt_all, supervised or none; second order unless ``first_order``.
    work_rule: ClassVar[str] = "adapt_then_query"
    # The meta-gradient is first order throughout (FOMAML); default False.
    first_order: ClassVar[bool] = False
    # Training scores the adapted weights on query examples, so ``query: 0`` is refused; default True.
    needs_query: ClassVar[bool] = True
    # The constructor takes ``num_classes``, the training split's class count (pretrain's head); default False.
    uses_num_classes: ClassVar[bool] = False
    # Whether it has :meth:`pure_gradient`, the form ``compile: true`` runs (metacompare.compiled); default False.
    compilable: ClassVar[bool] = False
    # MAML++'s options when the config has no ``mamlpp`` section; None (default): it has none.
    mamlpp_preset: ClassVar[MamlPlusPlusConfig | None] = None
    # Config fields an experiment file gives it unless the file sets them (config.expand); default none.
    config_defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({})

    def __init__(self, model: nn.Module, cfg: RunConfig):
        self.model, self.cfg = model, cfg
        self.loss_fn: Callable = F.cross_entropy if cfg.is_classification else F.mse_loss
        self.adapt_fn = get_adapt(cfg.backend)
        self.adapted = adapted_names(model)
        self.outer_optimizer = make_optimizer(cfg.outer_optimizer, self.meta_parameters(), cfg.outer_lr)
        self.inner_state: Any = None  # the inner optimiser's state when it is carried across tasks
        self._compiled: dict[bool, compiled.Pure] = {}  # pure_gradient compiled, per stacked (compile: true)
        self._logging = [0.0, 0.0]  # wall and CPU seconds spent on the logged training fit (logging_fit)
        self.progress = 0.0  # fraction of training done, set each iteration by set_outer_lr

    # ------------------------------------------------------------------------------ the network
    def forward(self, params: inner.Params, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, params, (x,))

    def theta(self) -> inner.Params:
        return dict(self.model.named_parameters())

    def meta_parameters(self) -> list[torch.Tensor]:
        """The tensors the outer optimiser updates (Meta-SGD-like plug-ins add their own)."""
        return list(self.model.parameters())

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
    def task_gradient(self, task: Task) -> TaskGradient:
        """This task's contribution to the meta-gradient, parallel to :meth:`meta_parameters`."""

    def batched_gradient(self, tasks: list[Task]) -> BatchGradient | None:
        """The mean meta-gradient computed for all tasks at once, or None where the plug-in has no
        batched form (the looped engine is then used)."""
        return None

    def pure_gradient(self, theta: inner.Params, *tensors: torch.Tensor, stacked: bool = False) -> tuple:
        """The task's (or, ``stacked``, the stack's mean) meta-gradient, loss and accuracy as one pure
        function of detached θ and the task's tensors, in ``torch.func``: what ``compile: true``
        compiles. Plug-ins with ``compilable = True`` fill it in."""
        raise NotImplementedError(f"{self.name} has no pure_gradient")

    def compiled_step(self, *tensors: torch.Tensor, stacked: bool = False) -> TaskGradient:
        """:meth:`pure_gradient` through ``torch.compile``, compiled on first use (once per shape)."""
        if stacked not in self._compiled:
            self._compiled[stacked] = compiled.compile_pure(functools.partial(self.pure_gradient, stacked=stacked),
                                                            self.cfg.device)
        theta = {k: v.detach() for k, v in self.theta().items()}
        grads, loss, acc = self._compiled[stacked](theta, *tensors)
        # CUDA graphs reuse their output buffers on the next call: take copies before that happens.
        return TaskGradient([g.clone() for g in grads], loss.item(), None if acc is None else acc.item())

    def meta_train_step(self, tasks: list[Task], engine: Callable | None = None) -> dict[str, float]:
        """One outer update from a meta-batch: θ ← outer_optimizer(θ, mean of task gradients)."""
        engine = engine or engine_for(self.cfg)
        with precision.autocast(self.cfg), training_mode(self.model):  # autocast: a no-op unless bfloat16
            batch = engine(self, tasks)
        self.outer_optimizer.zero_grad(set_to_none=True)
        for p, g in zip(self.meta_parameters(), batch.grads):
            p.grad = g
        self.outer_optimizer.step()
        metrics = {"loss": batch.loss}
        if batch.accuracy is not None:
            metrics["accuracy"] = batch.accuracy
        return metrics

    def replay_draws(self, task: Task) -> None:
        """Draw from torch's global RNG what :meth:`task_gradient` draws for ``task`` (its training inner
        loop's mini-batch shuffles), without the work: a process that leaves the task to another stays on
        the one-process random stream (:func:`split_engine`)."""
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

    def fit_summary(self, params: inner.Params, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float | None]:
        """The logged training loss, one definition for every algorithm: the adapted weights' loss
        (and accuracy) on the examples they were adapted on."""
        with self.logging_fit():
            outputs = self.forward(params, x)
            return self.loss_fn(outputs, y).item(), accuracy(outputs, y)

    def stacked_fit_summary(self, forward: inner.Forward, params: inner.Params, x: torch.Tensor,
                            y: torch.Tensor) -> tuple[float, float | None]:
        """:meth:`fit_summary` of a stack of tasks (the grouped network, ``x`` ``[T, N, ...]``): the mean
        over the tasks, as the looped engine's mean of per-task fits."""
        with self.logging_fit():
            outputs = forward(params, x)
            loss = inner.task_loss(outputs, y).mean().item()
            return loss, None if y.is_floating_point() else (outputs.argmax(-1) == y).float().mean().item()

    @contextmanager
    def logging_fit(self) -> Iterator[None]:
        """Times the extra forward pass that measures the logged training fit, without gradients. It is
        measurement, not training: it is reported (:meth:`take_logging_seconds`) and the budget leaves it
        out (:meth:`metacompare.budget.BudgetMeter.charge`), as it leaves out validation. Unequal
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

    def evaluate_stack(self, tasks: list[Task], steps: int, procedure: EvalProcedure | None = None,
                       generators: list[torch.Generator] | None = None) -> list[tuple[float, float | None]] | None:
        """:meth:`evaluate` of every task at once in one grouped network (``eval_batch``,
        :mod:`metacompare.batch_eval`), task ``t`` with mini-batch order ``generators[t]``; None where the
        plug-in has no such form (it adapts its own way: ANIL, Meta-SGD, pretrain) or the tasks cannot
        be stacked, so that they are evaluated one at a time."""
        if type(self).adapt is not MetaAlgorithm.adapt or type(self).evaluate is not MetaAlgorithm.evaluate:
            return None
        return batch_eval.evaluate_stack(self, tasks, steps, procedure, generators)

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


def _summed(algorithm: MetaAlgorithm, tasks: list[Task]) -> tuple[list[torch.Tensor], float, float | None]:
    """The sums over ``tasks`` of the task gradients, losses and accuracies (None for regression)."""
    total = [torch.zeros_like(p) for p in algorithm.meta_parameters()]
    loss, accuracy_sum = 0.0, None
    for task in tasks:
        step = algorithm.task_gradient(task)
        for acc, g in zip(total, step.grads):
            acc.add_(g)
        loss += step.loss
        if step.accuracy is not None:
            accuracy_sum = (accuracy_sum or 0.0) + step.accuracy
    return total, loss, accuracy_sum


def looped_gradient(algorithm: MetaAlgorithm, tasks: list[Task]) -> BatchGradient:
    """The looped engine: the mean of :meth:`MetaAlgorithm.task_gradient`, one task at a time."""
    total, loss, accuracy_sum = _summed(algorithm, tasks)
    n = len(tasks)
    return BatchGradient([g / n for g in total], loss / n, None if accuracy_sum is None else accuracy_sum / n)


def batched_gradient(algorithm: MetaAlgorithm, tasks: list[Task]) -> BatchGradient:
    """The task-batched engine: the plug-in's batched form where it has one, else the looped engine."""
    return algorithm.batched_gradient(tasks) or looped_gradient(algorithm, tasks)


def split_gradient(algorithm: MetaAlgorithm, tasks: list[Task], batched: bool = False) -> BatchGradient:
    """Data parallel (:mod:`metacompare.distributed`): this process's slice of the meta-batch, its sums
    all-reduced and divided by the meta-batch size, so every process gets the one-process mean.

    Looped, the tasks of other processes have their global-RNG draws replayed, so the random stream
    (inner mini-batch shuffles) is the one-process stream. Batched, a slice draws one shuffle sequence
    for its whole stack, as the whole meta-batch does in one process.
    """
    begin, end = distributed.bounds(len(tasks))
    mine = tasks[begin:end]
    part = algorithm.batched_gradient(mine) if batched else None
    if part is not None:
        sums = [g * len(mine) for g in part.grads]
        loss, accuracy_sum = part.loss * len(mine), None if part.accuracy is None else part.accuracy * len(mine)
    else:
        for task in tasks[:begin]:
            algorithm.replay_draws(task)
        sums, loss, accuracy_sum = _summed(algorithm, mine)
        for task in tasks[end:]:
            algorithm.replay_draws(task)
    stats = torch.tensor([loss, accuracy_sum or 0.0], dtype=torch.float64, device=sums[0].device)
    *sums, stats = distributed.all_sum([*sums, stats])
    n = len(tasks)
    return BatchGradient([g / n for g in sums], stats[0].item() / n,
                         None if accuracy_sum is None else stats[1].item() / n)


ENGINES: dict[str, Callable[[MetaAlgorithm, list[Task]], BatchGradient]] = {
    "looped": looped_gradient, "batched": batched_gradient}


def engine_for(cfg: RunConfig) -> Callable[[MetaAlgorithm, list[Task]], BatchGradient]:
    """The engine a config asks for (``batch_tasks``), split over the processes of a distributed run."""
    if distributed.world_size() > 1:
        return functools.partial(split_gradient, batched=cfg.batch_tasks)
    return ENGINES["batched" if cfg.batch_tasks else "looped"]
