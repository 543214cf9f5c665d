"""The chains engine: Reptile's carried inner state as independent chains, so that its meta-batch can run on processes.

supervised-reptile (Nichol et al. 2018) carries one Adam state from task to task (``inner_state:
carry``): each task starts from the moments and step count the previous task left, one serial chain
through the whole of training, which no two processes can share. ``inner_chains: C`` keeps C chains
instead: chain ``c`` owns the ``c``-th contiguous share of every meta-batch
(``distributed.bounds(M, c, C)``) and carries its own Adam state over its tasks, iteration after
iteration; ``C = 1`` is the serial chain. A process holds whole chains (``bounds(C, rank, W)``), so what
is computed does not depend on the number of processes: one process with C chains computes what C
processes do, and ``compare --procs W`` can give Reptile W processes for any ``W <= C``.

After each meta-batch the chains' states are all-reduced with the gradient sums (zeros for the chains a
process does not hold, so the sum copies them exactly): every process then holds every chain, so rank 0's
checkpoint is whole and resumes exactly, and test-time adaptation starts from chain 0's state (the chain
of the meta-batch's first task, as the serial chain's state would be) on every rank.

Looped, the tasks run in meta-batch order and the tasks of other processes have their shuffles
replayed: the one-process random stream. Batched (``batch_tasks``), round ``k`` stacks the ``k``-th task
of every chain in one grouped network (chains at the same Adam step count together; with ``C`` not
dividing ``M`` the longer chains are ahead), each round drawing one task's shuffles on every process.
"""

from __future__ import annotations

import torch

from metacompare.engines import distributed

from metacompare.models import grouped

from metacompare.algorithms import inner
from metacompare.algorithms.base import BatchGradient, MetaAlgorithm
from metacompare.data import Task
from metacompare.engines import looped, rules
from metacompare.engines.batched import stack
from metacompare.engines.net import TaskNet


def spans(count: int, chains: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each chain's tasks in a meta-batch of ``count``."""
    return [distributed.bounds(count, c, chains) for c in range(chains)]


def chained_gradient(algorithm: MetaAlgorithm, tasks: list[Task], batched: bool = False) -> BatchGradient:
    """The mean meta-gradient of ``tasks`` with ``algorithm.chains`` carried (see the module docstring);
    under ``torch.distributed`` this process computes its chains' tasks and the sums are all-reduced."""
    chains = algorithm.chains
    shares = spans(len(tasks), len(chains))
    mine = range(*distributed.bounds(len(chains)))
    if batched and grouped.same_shapes(tasks):
        sums, loss, accuracy_sum = _rounds(algorithm, tasks, shares, mine)
    else:
        sums, loss, accuracy_sum = _looped(algorithm, tasks, shares, mine)
    stats = torch.tensor([loss, accuracy_sum or 0.0], dtype=torch.float64, device=sums[0].device)
    if distributed.world_size() > 1:
        sums, stats = _synchronised(algorithm, mine, sums, stats)
    algorithm.inner_state = chains[0]  # what test-time adaptation starts from
    n = len(tasks)
    return BatchGradient([g / n for g in sums], stats[0].item() / n,
                         None if accuracy_sum is None else stats[1].item() / n)


def _looped(algorithm, tasks, shares, mine):
    """This process's chains, one task at a time in meta-batch order; the other tasks' draws replayed."""
    begin, end = shares[mine.start][0], shares[mine.stop - 1][1]
    for task in tasks[:begin]:
        algorithm.replay_draws(task)
    total = [torch.zeros_like(p) for p in algorithm.meta_parameters()]
    loss, accuracy_sum = 0.0, None
    for c in mine:
        state = algorithm.chains[c]
        for task in tasks[slice(*shares[c])]:
            net = TaskNet(algorithm, carry=True, state=state)
            step = looped.task_gradient(algorithm, task, net)
            state = net.state
            for acc, g in zip(total, step.grads):
                acc.add_(g)
            loss += step.loss
            if step.accuracy is not None:
                accuracy_sum = (accuracy_sum or 0.0) + step.accuracy
        algorithm.chains[c] = state
    for task in tasks[end:]:
        algorithm.replay_draws(task)
    return total, loss, accuracy_sum


def _rounds(algorithm, tasks, shares, mine):
    """Round ``k``: the ``k``-th task of each of this process's chains in one grouped network per Adam
    step count, all from the same random state; a process with no task in a round replays one's draws."""
    total = [torch.zeros_like(p) for p in algorithm.meta_parameters()]
    loss, accuracy_sum = 0.0, None
    for k in range(shares[0][1] - shares[0][0]):  # the first chain is a longest one
        active = [c for c in mine if shares[c][0] + k < shares[c][1]]
        if not active:
            algorithm.replay_draws(tasks[shares[0][0] + k])
            continue
        by_step: dict[int, list[int]] = {}
        for c in active:
            by_step.setdefault(_step(algorithm.chains[c]), []).append(c)
        start = torch.get_rng_state()
        for members in by_step.values():
            torch.set_rng_state(start)  # every group draws the round's one shuffle sequence
            group = [tasks[shares[c][0] + k] for c in members]
            sums, fit_loss, fit_acc, states = _stack_link(algorithm, group, [algorithm.chains[c] for c in members])
            for acc, g in zip(total, sums):
                acc.add_(g)
            loss += fit_loss * len(group)
            if fit_acc is not None:
                accuracy_sum = (accuracy_sum or 0.0) + fit_acc * len(group)
            for c, state in zip(members, states):
                algorithm.chains[c] = state
    return total, loss, accuracy_sum


def _stack_link(algorithm: MetaAlgorithm, tasks: list[Task], states: list) -> tuple:
    """One link of several chains at once, in the grouped network: the sum over ``tasks`` of θ − θ̃, the
    mean fit loss and accuracy, and each chain's new state. ``states`` share one step count."""
    net = TaskNet(algorithm, tasks=len(tasks), carry=True, state=inner.stack_states(states))
    theta = algorithm.named_meta_parameters()
    objective = algorithm.task_objective(net, rules.start(algorithm, theta, len(tasks), track=False),
                                         stack(tasks))
    loss, acc = rules.logged_fit(algorithm, net, objective)
    with torch.no_grad():
        sums = [len(tasks) * t.detach() - objective.adapted[k].detach().sum(0) for k, t in theta.items()]
    return sums, loss, acc, inner.unstack_state(net.state, len(tasks))


def _step(state) -> int:
    return 0 if state is None else state.step


def _synchronised(algorithm, mine, sums, stats):
    """All-reduce the gradient sums and stats, and every chain's state (this process's chains, zeros for
    the others: exact copies), so that every process holds every chain afterwards."""
    theta = algorithm.theta()
    names = [k for k in theta if k in algorithm.adapted]
    chains = algorithm.chains
    steps = torch.tensor([float(_step(chains[c])) if c in mine else 0.0 for c in range(len(chains))],
                         dtype=torch.float64, device=stats.device)
    moments = []
    for c in range(len(chains)):
        for part in ("m", "v"):
            for k in names:
                moments.append(getattr(chains[c], part)[k] if c in mine else torch.zeros_like(theta[k]).detach())
    reduced = distributed.all_sum([*sums, stats, steps, *moments])
    sums, stats, steps, moments = reduced[:len(sums)], reduced[len(sums)], reduced[len(sums) + 1], reduced[len(sums) + 2:]
    at = 0
    for c in range(len(chains)):
        m = dict(zip(names, moments[at:at + len(names)]))
        v = dict(zip(names, moments[at + len(names):at + 2 * len(names)]))
        at += 2 * len(names)
        chains[c] = inner.AdamState(int(steps[c].item()), m, v)
    return sums, stats
