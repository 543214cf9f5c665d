"""An objective's meta-gradient under its rule (:data:`~metacompare.algorithms.base.RULES`), in the two
ways engines differentiate: ``torch.autograd`` (looped and grouped engines) and ``torch.func`` (``vmap``
and ``torch.compile``, which need one pure function from tensors to tensors).

On a stack of T tasks (the grouped network) the objective's loss is the mean over the tasks, so its
gradient with respect to θ (through every task's copy) is the mean of the task gradients; at the adapted
weights each task's copy gets 1/T of its own gradient, so the sum over the task axis is their mean.
"""

from __future__ import annotations

import math

import torch

from metacompare.models import grouped

from metacompare.algorithms import inner
from metacompare.algorithms.base import AT_ADAPTED, RULES, THROUGH, MetaAlgorithm, Net, Objective
from metacompare.data import Task


def start(algorithm: MetaAlgorithm, params: inner.Params, tasks: int, track: bool) -> inner.Params:
    """The objective's parameters for ``tasks`` stacked tasks (0: one task): θ repeated per task
    (differentiable back to θ when ``track``, else fresh leaves), the other meta-parameters shared."""
    if not tasks:
        return params
    theta = algorithm.theta()
    copies = grouped.stacked({k: params[k] for k in theta}, tasks, track)
    return {**copies, **{k: v for k, v in params.items() if k not in theta}}


def rule_of(algorithm: MetaAlgorithm) -> str:
    """The algorithm's gradient rule, one of :data:`~metacompare.algorithms.base.RULES`."""
    rule = algorithm.gradient_rule()
    if rule not in RULES:
        raise ValueError(f"{algorithm.name}.gradient_rule() gave {rule!r}; expected one of {', '.join(RULES)}")
    return rule


def autograd_gradient(algorithm: MetaAlgorithm, net: Net, task: Task) -> tuple[list[torch.Tensor], Objective]:
    """The mean meta-gradient of ``task`` (a stack when ``net.tasks``), parallel to
    ``meta_parameters()``, by ``torch.autograd``; and the objective, for its logged fit."""
    rule, params = rule_of(algorithm), algorithm.named_meta_parameters()
    objective = algorithm.task_objective(net, start(algorithm, params, net.tasks, rule == THROUGH), task)
    if rule == THROUGH:
        wrt = list(params.values())
        grads = torch.autograd.grad(objective.loss(objective.adapted), wrt, allow_unused=True)
        return [torch.zeros_like(t) if g is None else g for t, g in zip(wrt, grads)], objective
    if rule == AT_ADAPTED:
        grads = torch.autograd.grad(objective.loss(objective.adapted), list(objective.adapted.values()))
        return [g.sum(0) if net.tasks else g for g in grads], objective
    return _delta(algorithm, params, objective.adapted, net.tasks), objective


def _delta(algorithm: MetaAlgorithm, params: inner.Params, adapted: inner.Params, tasks: int) -> list[torch.Tensor]:
    """delta_sign·(θ − θ̃), the mean θ̃ of a stack, as constants."""
    with torch.no_grad():
        grads = [params[k].detach() - (adapted[k].mean(0) if tasks else adapted[k]).detach() for k in params]
    return grads if algorithm.delta_sign == 1 else [algorithm.delta_sign * g for g in grads]


def pure_gradient(algorithm: MetaAlgorithm, net: Net, params: inner.Params, task: Task) -> tuple:
    """:func:`autograd_gradient` as one pure function of detached ``params`` (the named meta-parameters)
    and the task's tensors, in ``torch.func``: the gradients, and the fit's loss and accuracy as tensors
    (accuracy None for regression), so that ``vmap`` maps it and ``torch.compile`` traces it whole."""
    rule = rule_of(algorithm)
    found: list[Objective] = []
    if rule == THROUGH:
        def loss_of(p):
            found.append(algorithm.task_objective(net, start(algorithm, p, net.tasks, True), task))
            return found[-1].loss(found[-1].adapted), (found[-1].adapted, found[-1].fit_x, found[-1].fit_y)
        grads, (adapted, fit_x, fit_y) = torch.func.grad(loss_of, has_aux=True)(params)
        grads = [grads[k] for k in params]
    else:
        found.append(algorithm.task_objective(net, start(algorithm, params, net.tasks, True), task))
        adapted, fit_x, fit_y = found[0].adapted, found[0].fit_x, found[0].fit_y
        if rule == AT_ADAPTED:
            grads = torch.func.grad(found[0].loss)(adapted)
            grads = [grads[k].sum(0) if net.tasks else grads[k] for k in params]
        else:
            grads = _delta(algorithm, params, adapted, net.tasks)
    predict = found[-1].predict or net.forward
    return grads, *fit_metrics(predict(adapted, fit_x), fit_y)


def fit_metrics(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mean loss and accuracy (None for regression) of one task's or a stack's outputs, as tensors."""
    loss = inner.task_loss(outputs, targets).mean()
    if targets.is_floating_point():
        return loss, None
    return loss, (outputs.argmax(-1) == targets).float().mean()


def logged_fit(algorithm: MetaAlgorithm, net: Net, objective: Objective) -> tuple[float, float | None]:
    """The logged training loss, one definition for every algorithm and engine: the adapted weights'
    loss (and accuracy) on the examples the objective names, measured without gradients and timed
    apart from training (:meth:`MetaAlgorithm.logging_fit`). Not measured (NaN) on the iterations between
    two ``fit_interval`` ones (``algorithm.measure_fit`` False): the training step is the same without it."""
    if not algorithm.measure_fit:
        return math.nan, None if objective.fit_y.is_floating_point() else math.nan
    with algorithm.logging_fit():
        predict = objective.predict or net.forward
        loss, acc = fit_metrics(predict(objective.adapted, objective.fit_x), objective.fit_y)
        return loss.item(), None if acc is None else acc.item()
