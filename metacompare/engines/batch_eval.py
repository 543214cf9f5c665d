"""Test-time adaptation of many episodes at once in one grouped network (``eval_batch``).

Validation and test adapt every episode from the same θ and, under ``inner_state: carry``, from the same
carried Adam state, which evaluation leaves as it was (supervised-reptile, Nichol et al. 2018, restores
it after each test episode). The episodes are therefore independent and can be stacked like a
meta-batch in :mod:`metacompare.models.grouped`: each episode gets its own copy of θ and of the carried state,
and its own mini-batch order (its own generator, seeded with its index by
:func:`metacompare.training.scoring.evaluate`), so it computes what :meth:`MetaAlgorithm.evaluate` computes for
it alone, up to the float rounding of the grouped kernels. What that buys: Reptile's 50-step Adam
evaluation on 200 episodes runs 50 steps of one network of 200 groups instead of 10,000 small steps
(``experiments/bench_eval.py`` times both).
"""

from __future__ import annotations

import torch

from metacompare.models import grouped

from metacompare.algorithms import inner
from metacompare.algorithms.base import MetaAlgorithm, predict_query
from metacompare.data import Task

OFF = "eval_batch: 0"  # the setting that evaluates one episode at a time, named in grouped's errors


def stacked_scores(algorithm, tasks: list[Task], steps: int, procedure=None,
                   generators: list[torch.Generator] | None = None) -> list[tuple[float, float | None]] | None:
    """:func:`evaluate_stack` for a plug-in that adapts and evaluates as :class:`MetaAlgorithm` does (the
    loop this module stacks); None for one that adapts its own way (ANIL, Meta-SGD, pretrain, the MAML
    family), which is evaluated one task at a time."""
    if type(algorithm).adapt is not MetaAlgorithm.adapt or type(algorithm).evaluate is not MetaAlgorithm.evaluate:
        return None
    return evaluate_stack(algorithm, tasks, steps, procedure, generators)


def evaluate_stack(algorithm, tasks: list[Task], steps: int, procedure=None,
                   generators: list[torch.Generator] | None = None) -> list[tuple[float, float | None]] | None:
    """Each task's query loss and accuracy after ``steps`` adaptation steps on its support set, all
    tasks adapted together; None where they cannot be stacked (unequal shapes, an inner state that is
    not Adam's), so that the caller evaluates them one at a time (:meth:`MetaAlgorithm.evaluate`)."""
    state = algorithm.inner_state if procedure is None else None
    if not grouped.same_shapes(tasks) or not (state is None or isinstance(state, inner.AdamState)):
        return None
    sx, sy = grouped.stack([t.support_x for t in tasks]), grouped.stack([t.support_y for t in tasks])
    qx, qy = grouped.stack([t.query_x for t in tasks]), grouped.stack([t.query_y for t in tasks])

    def forward(params, x):
        return grouped.grouped_forward(algorithm.model, params, x, off=OFF)

    start = grouped.stacked(algorithm.theta(), len(tasks), track=False)
    with torch.enable_grad():
        params, _ = inner.adapt(forward, start, sx, sy, algorithm.evaluation_loop(steps, procedure),
                                inner.stack_states([state] * len(tasks)), generators, stacked=True)
    params = {k: v.detach() for k, v in params.items()}
    with torch.no_grad():
        outputs = predict_query(lambda x: forward(params, x), sx, qx, algorithm.cfg.evaluation, axis=1)
        losses = [algorithm.loss_fn(outputs[t], qy[t]).item() for t in range(len(tasks))]
        if qy.is_floating_point():
            return [(loss, None) for loss in losses]
        accuracies = (outputs.argmax(-1) == qy).float().mean(-1).tolist()
    return list(zip(losses, accuracies))
