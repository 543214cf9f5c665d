"""The one functional inner loop: parameters in, adapted parameters out.

Every algorithm, baseline and engine adapts through :func:`adapt`. Parameters are a ``dict`` of
tensors and the network is called through a ``forward(params, x)`` function, so the same loop serves
one task (``torch.func.functional_call``) and a whole meta-batch at once (the grouped network of
:mod:`metacompare.engines`). What varies between the papers is data, not code:

- the step: a small optimiser plug-in with optax's shape (``init`` then ``update``), plain SGD with
  a float or per-parameter step size (Meta-SGD), or Adam whose state the caller may carry from task to
  task (supervised-reptile resets only the model's variables between tasks, not Adam's);
- the batches: full batch, or mini-batches drawn without replacement, one pass after another
  (supervised-reptile's ``_mini_batches``);
- the order: second order keeps the graph through every step (MAML); first order does not;
- the loss reduction: the mean, the sum, or Finn et al.'s sum over examples divided by the shots K.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Protocol

import torch
import torch.nn.functional as F

Params = dict[str, torch.Tensor]
Forward = Callable[[Params, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------------- loss reduction
def task_loss(outputs: torch.Tensor, targets: torch.Tensor, reduction: str = "mean", shots: int = 1) -> torch.Tensor:
    """Loss of one task (``outputs [N, C]``) or of each task of a stack (``[T, N, C]`` gives ``[T]``).

    ``mean``: the mean over examples. ``sum``: their sum, what TensorFlow differentiates when handed a
    vector of per-example losses (supervised-reptile). ``sum_over_shots``: that sum divided by K, the
    loss of Finn et al.'s code (cbfinn/maml ``xent`` divides by ``update_batch_size``), so its step sizes
    (0.4 for 5-way Omniglot) can be used verbatim: it is ``ways`` times the mean.
    """
    classify = not targets.is_floating_point()
    if outputs.dim() == 2 and reduction == "mean":  # one task: exactly the library's own mean
        return F.cross_entropy(outputs, targets) if classify else F.mse_loss(outputs, targets)
    lead = outputs.shape[:-2]  # () for one task, (T,) for a stack of tasks
    if classify:
        flat = F.cross_entropy(outputs.flatten(0, -2), targets.flatten(), reduction="none")
    else:
        flat = F.mse_loss(outputs.flatten(0, -2), targets.flatten(0, -2), reduction="none")
    per_task = flat.reshape(*lead, -1)
    if reduction == "mean":
        return per_task.mean(-1)
    total = per_task.sum(-1)
    return total / shots if reduction == "sum_over_shots" else total


# ---------------------------------------------------------------------------------- optimisers
class InnerOptimizer(Protocol):
    """A functional optimiser: ``init`` makes its state, ``update`` returns new params and state."""

    def init(self, params: Params) -> Any: ...

    def update(self, params: Params, grads: Params, state: Any) -> tuple[Params, Any]: ...


@dataclass(frozen=True)
class SGD:
    """θ ← θ − α·g; ``lr`` is one float or a tensor per parameter name (Meta-SGD's learned α)."""

    lr: float | Mapping[str, torch.Tensor]

    def init(self, params: Params) -> None:
        return None

    def update(self, params: Params, grads: Params, state: None) -> tuple[Params, None]:
        rate = self.lr
        if isinstance(rate, Mapping):
            return {k: p - rate[k] * grads[k] if k in grads else p for k, p in params.items()}, None
        return {k: p - rate * grads[k] if k in grads else p for k, p in params.items()}, None


@dataclass(frozen=True)
class PerStepSGD:
    """θ ← θ − α_{k,i}·g at inner step k for parameter tensor i: MAML++'s learned per-layer per-step
    step sizes (LSLR, Antoniou et al. 2019, section 4). ``rates`` maps each name to a vector of one rate
    per training step; a test-time loop longer than that keeps the last rate. The state is the step."""

    rates: Mapping[str, torch.Tensor]

    def init(self, params: Params) -> int:
        return 0

    def update(self, params: Params, grads: Params, state: int) -> tuple[Params, int]:
        def rate(k: str) -> torch.Tensor:
            vector = self.rates[k]
            return vector[min(state, len(vector) - 1)]
        return {k: p - rate(k) * grads[k] if k in grads else p for k, p in params.items()}, state + 1


@dataclass
class AdamState:
    """Adam's step count and moment estimates, per parameter name."""

    step: int
    m: Params
    v: Params

    def detached(self) -> "AdamState":
        return AdamState(self.step, {k: t.detach() for k, t in self.m.items()},
                         {k: t.detach() for k, t in self.v.items()})

    def to_dict(self) -> dict:
        return {"step": self.step, "m": {k: t.detach().clone() for k, t in self.m.items()},
                "v": {k: t.detach().clone() for k, t in self.v.items()}}

    @classmethod
    def from_dict(cls, state: dict) -> "AdamState":
        return cls(int(state["step"]), dict(state["m"]), dict(state["v"]))


def stack_states(states: list) -> "AdamState | None":
    """Adam states stacked along a leading task axis, as the grouped network adapts stacked tasks: Reptile's
    chains (:mod:`metacompare.engines.chains`) or one carried state per test episode
    (:mod:`metacompare.engines.batch_eval`). None where none has started."""
    if all(s is None for s in states):
        return None
    if any(s is None for s in states) or len({s.step for s in states}) != 1:
        raise ValueError("only chains at one Adam step count can share a stack")
    first = states[0]
    return AdamState(first.step, {k: torch.stack([s.m[k] for s in states]) for k in first.m},
                     {k: torch.stack([s.v[k] for s in states]) for k in first.v})


def unstack_state(state: AdamState, count: int) -> list[AdamState]:
    """:func:`stack_states` undone: each task's own state."""
    return [AdamState(state.step, {k: t[i] for k, t in state.m.items()}, {k: t[i] for k, t in state.v.items()})
            for i in range(count)]


@dataclass(frozen=True)
class Adam:
    """Adam in the form of Kingma & Ba (2015, end of section 2), as TensorFlow implements it:
    α_t = α·√(1−β₂ᵗ)/(1−β₁ᵗ), θ ← θ − α_t·m/(√v + ε). supervised-reptile uses β₁ = 0."""

    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def init(self, params: Params) -> AdamState:
        return AdamState(0, {k: torch.zeros_like(p) for k, p in params.items()},
                         {k: torch.zeros_like(p) for k, p in params.items()})

    def update(self, params: Params, grads: Params, state: AdamState) -> tuple[Params, AdamState]:
        b1, b2 = self.betas
        step = state.step + 1
        if _plain(grads.values()):
            return self._update_foreach(params, grads, state, step)
        m = {k: b1 * state.m[k] + (1 - b1) * g for k, g in grads.items()}
        v = {k: b2 * state.v[k] + (1 - b2) * g * g for k, g in grads.items()}
        rate = self.lr * math.sqrt(1 - b2 ** step) / (1 - b1 ** step)
        new = {k: p - rate * m[k] / (v[k].sqrt() + self.eps) if k in grads else p for k, p in params.items()}
        return new, AdamState(step, {**state.m, **m}, {**state.v, **v})

    def _update_foreach(self, params: Params, grads: Params, state: AdamState, step: int) -> tuple[Params, AdamState]:
        """The same step in ``torch._foreach_*`` kernels, one call per operation for all tensors instead
        of one per tensor: a first-order inner step on a small network is bound by operator overhead
        (``experiments/adam_probe.py`` measures the gain), and nothing here needs a graph."""
        b1, b2 = self.betas
        names = list(grads)
        g = [grads[k] for k in names]
        m = torch._foreach_mul([state.m[k] for k in names], b1)
        torch._foreach_add_(m, g, alpha=1 - b1)
        v = torch._foreach_mul([state.v[k] for k in names], b2)
        torch._foreach_addcmul_(v, g, g, value=1 - b2)
        denominator = torch._foreach_sqrt(v)
        torch._foreach_add_(denominator, self.eps)
        rate = self.lr * math.sqrt(1 - b2 ** step) / (1 - b1 ** step)
        moved = torch._foreach_addcdiv([params[k] for k in names], m, denominator, value=-rate)
        new = {**params, **dict(zip(names, moved))}
        return new, AdamState(step, {**state.m, **dict(zip(names, m))}, {**state.v, **dict(zip(names, v))})


def _plain(tensors) -> bool:
    """True where an update may use the fused ``_foreach`` kernels: no autograd graph to keep (second
    order), no ``torch.func`` transform or ``torch.compile`` trace around the loop (``pure``)."""
    if torch.compiler.is_compiling():
        return False
    return not any(t.requires_grad or torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors)


def make_inner_optimizer(name: str, lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> InnerOptimizer:
    if name == "sgd":
        return SGD(lr)
    if name == "adam":
        return Adam(lr, tuple(betas))
    raise ValueError(f"unknown inner optimiser '{name}'")


# ------------------------------------------------------------------------------------ batches
def mini_batches(size: int, batch: int, count: int, generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
    """``count`` index batches of ``batch`` examples out of ``size``, without replacement: shuffle,
    cut consecutive batches, reshuffle when the examples run out (a batch may span two passes), as
    supervised-reptile's ``_mini_batches(..., replacement=False)``. ``batch`` 0 or ≥ size: all
    examples every step, in order."""
    if batch <= 0 or batch >= size:
        everything = torch.arange(size)
        for _ in range(count):
            yield everything
        return
    current: list[torch.Tensor] = []
    taken = done = 0
    while True:
        for index in torch.randperm(size, generator=generator):
            current.append(index)
            taken += 1
            if taken < batch:
                continue
            yield torch.stack(current)
            done += 1
            if done == count:
                return
            current, taken = [], 0


# ------------------------------------------------------------------------------------- the loop
@dataclass
class InnerLoop:
    """How a task is adapted: optimiser, number of steps, mini-batch size, order, loss reduction.

    ``adapted`` names the parameters the loop changes (None: all); the others pass through as they
    are, still differentiable with respect to θ (Finn et al.'s BatchNorm offsets, ANIL's body).
    """

    optimizer: InnerOptimizer
    steps: int
    batch_size: int = 0
    second_order: bool = False
    reduction: str = "mean"
    shots: int = 1
    adapted: tuple[str, ...] | None = None
    # MAML++ (Antoniou et al. 2019): ``at_step(k)`` gives tensors that replace parameters or buffers in
    # step k's forward pass (per-step BatchNorm weights and statistics); ``cut=False`` keeps a first-order
    # loop's update graph (θ̃ = θ − α·g with g a constant), so learned step sizes get their gradient.
    at_step: Callable[[int], Params] | None = None
    cut: bool = True


def adapt(forward: Forward, params: Params, x: torch.Tensor, y: torch.Tensor, loop: InnerLoop,
          state: Any = None, generator: torch.Generator | list[torch.Generator] | None = None, stacked: bool = False,
          pure: bool = False, trace: list[Params] | None = None) -> tuple[Params, Any]:
    """Take ``loop.steps`` optimiser steps on (x, y) from ``params``; return adapted params and state.

    ``stacked``: ``x``/``y`` carry a leading task axis (``[T, N, ...]``); the loss is then the sum of
    the tasks' losses, whose gradient with respect to task ``t``'s parameters is task ``t``'s own
    gradient, and the elementwise optimisers act as ``T`` independent ones. ``state`` None starts the
    optimiser afresh; a list of generators (``stacked``) gives each task its own mini-batch order.
    First order: the adapted parameters are returned as fresh leaves (FOMAML and Reptile take no
    gradient through the steps); second order keeps the whole graph back to θ.

    ``pure``: the step gradients come from ``torch.func.grad`` instead of ``torch.autograd.grad``, so
    the loop is a pure function that ``torch.compile`` traces whole (:mod:`metacompare.engines.torch_compile`);
    second order is then whatever ``torch.func`` transform the caller wraps around it, and first order
    cuts the steps with ``detach``.

    ``trace``: a list that receives the parameters after every step (MAML++'s multi-step loss).
    """
    names = [k for k in params if loop.adapted is None or k in loop.adapted]
    if state is None:
        state = loop.optimizer.init({k: params[k] for k in names})
    axis = 1 if stacked else 0
    examples = y.shape[axis]
    for step, index in enumerate(_orders(examples, loop, generator)):
        if index.shape[-1] == examples:
            bx, by = x, y
        elif index.dim() == 2:  # one order per stacked task: task t takes its own rows index[t]
            index = index.to(x.device)
            rows = torch.arange(len(index), device=x.device)[:, None]
            bx, by = x[rows, index], y[rows, index]
        else:  # drawn on the CPU generator (the same order on every device), taken on the data's device
            index = index.to(x.device)
            bx, by = x.index_select(axis, index), y.index_select(axis, index)
        fixed = loop.at_step(step) if loop.at_step is not None else {}
        grads = _step_gradient(forward, params, names, bx, by, loop, pure, fixed)
        params, state = loop.optimizer.update(params, grads, state)
        if not loop.second_order and loop.cut:
            params = {k: (_cut(p, pure) if k in names else p) for k, p in params.items()}
        if trace is not None:
            trace.append(params)
    return params, state


def _orders(examples: int, loop: InnerLoop, generator) -> Iterator[torch.Tensor]:
    """The loop's mini-batch indices: :func:`mini_batches` from one generator, or, given a list of
    generators (stacked tasks, one each), each task's own batches stacked ``[T, batch]``, as each task
    adapted alone from its own generator would draw them (batched evaluation, :mod:`metacompare.engines.batch_eval`)."""
    if not isinstance(generator, (list, tuple)):
        return mini_batches(examples, loop.batch_size, loop.steps, generator)
    return (torch.stack(rows) for rows in zip(*(mini_batches(examples, loop.batch_size, loop.steps, g)
                                                for g in generator)))


def _step_gradient(forward: Forward, params: Params, names: list[str], x: torch.Tensor, y: torch.Tensor,
                   loop: InnerLoop, pure: bool, fixed: Params | None = None) -> Params:
    """The gradient of one step's loss with respect to the adapted parameters ``names``; ``fixed``
    replaces other tensors of the forward pass for this step (:attr:`InnerLoop.at_step`)."""
    def loss_of(adapted: Params) -> torch.Tensor:
        return task_loss(forward({**params, **(fixed or {}), **adapted}, x), y, loop.reduction, loop.shots).sum()

    if pure:
        return torch.func.grad(loss_of)({k: params[k] for k in names})
    loss = loss_of({})
    grads = torch.autograd.grad(loss, [params[k] for k in names], create_graph=loop.second_order)
    return dict(zip(names, grads))


def _cut(p: torch.Tensor, pure: bool) -> torch.Tensor:
    """A first-order step's result: no gradient flows back through it (a fresh leaf outside ``pure``)."""
    return p.detach() if pure else p.detach().requires_grad_()
