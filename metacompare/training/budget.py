"""Training budgets: iterations, wall-clock training seconds, or work done, whichever ends first.

A fair comparison gives every algorithm the same budget (Chen et al. 2019, *A Closer Look at
Few-shot Classification*; Triantafillou et al. 2020, *Meta-Dataset*): 500 iterations of MAML
(32 tasks, second order) and of Reptile (5 tasks, first order) are not the same amount of compute.

**Work** is counted in example-passes, the rule of Kaplan et al. (2020, *Scaling Laws for Neural
Language Models*, section 2.1): one example through the network forward costs 1, its backward pass
2 (reverse mode costs about twice the forward it differentiates; Griewank & Walther 2008, *Evaluating
Derivatives*, ch. 4). A second-order meta-gradient also differentiates each inner step's forward and
backward pass (cost 1 + 2 = 3 per example), which by the same rule costs 2 x 3 = 6 more per example
and step. So, per task, with ``s`` support examples per inner step, ``k`` inner steps and ``q`` query
examples: first order 3·s·k + 3·q, second order 3·s·k + 6·s·k + 3·q; Reptile 3·b·k on its mini-batches
of ``b`` (no query pass); supervised pre-training 3·n. Logging forwards and validation are not counted.
An example-pass is not a FLOP count: when algorithms use different networks (omniglot_minimal's
conv4_nichol and conv4_finn), equal work is not equal compute, and a seconds budget is the fair one.

Seconds are training seconds: task sampling and meta-updates, without validation and checkpoint
writes, which are timed separately (``validation_seconds``), and without the forward pass that measures
the logged training fit (``logging_seconds``; an algorithm reports it, :meth:`MetaAlgorithm.logging_fit`;
not separable inside a ``compile: true`` step, which is charged for it). :meth:`BudgetMeter.charge` is
the one place that decides what an iteration costs: algorithms report, the meter charges. ``cpu_seconds`` counts them in this
process's CPU time (all its threads) rather than on the wall clock: on a shared CPU machine, runs that
happen to overlap other work are then not charged for the time they waited for a core. They are still
slowed while they run (shared caches and memory bandwidth): on this project's 2-core machine a
Reptile run did 2,739-3,203 iterations per 600 CPU-s beside other work and 3,642-4,078 alone
(docs/recorded-results.md), so equal CPU seconds are equal work only on an otherwise idle machine.
"""

from __future__ import annotations

import math
import time
from typing import Any

from metacompare.engines import distributed
from metacompare.config.runconfig import BUDGET_AT_MOST

FORWARD, BACKWARD = 1, 2  # example-pass costs (Kaplan et al. 2020: 2N and 4N FLOPs per token)
STEP = FORWARD + BACKWARD  # one inner or outer gradient step, per example
SECOND_ORDER = BACKWARD * STEP  # differentiating one inner step's forward and backward, per example


def step_examples(examples: int, batch_size: int) -> int:
    """Examples one inner step sees: a mini-batch of ``batch_size``, or all when 0 or larger."""
    return batch_size if 0 < batch_size < examples else examples


def adaptation_work(examples: int, batch_size: int, steps: int, second_order: bool) -> int:
    """Work of ``steps`` inner steps on ``examples`` (mini-batches of ``batch_size``)."""
    per_step = step_examples(examples, batch_size)
    return (STEP + (SECOND_ORDER if second_order else 0)) * per_step * steps


def task_work(rule: str, cfg, second_order: bool) -> int:
    """Work of one training task's meta-gradient under an algorithm's ``work_rule``.

    ``adapt_then_query``: adapt on the support set, then a gradient on the query set (MAML family);
    ``adapt_all``: adapt on all of a task's examples, no query pass (Reptile); ``supervised``: one
    gradient on all examples (pre-training); ``none``: no training (learning from scratch).
    """
    support, query = cfg.ways * cfg.training_shots, cfg.ways * cfg.query
    if rule == "adapt_then_query":
        return adaptation_work(support, cfg.inner_batch_size, cfg.inner_steps, second_order) + STEP * query
    if rule == "adapt_all":
        return adaptation_work(support + query, cfg.inner_batch_size, cfg.inner_steps, False)
    if rule == "supervised":
        return STEP * (support + query)
    if rule == "none":
        return 0
    raise ValueError(f"unknown work rule '{rule}'")


def iteration_work(algorithm, cfg) -> int:
    """Work of one meta-iteration: ``meta_batch_size`` tasks under the algorithm's declared ``work_rule``
    (second order unless it declares ``first_order``)."""
    second_order = not getattr(algorithm, "first_order", False)
    return task_work(algorithm.work_rule, cfg, second_order) * cfg.meta_batch_size


def clock() -> tuple[float, float]:
    """Now, on the wall clock and in this process's CPU time: where an iteration's charge starts."""
    return time.perf_counter(), time.process_time()


class BudgetMeter:
    """Counts a run's training seconds, validation seconds and work, and says when the budget is spent.

    Its counters live in ``state`` (the runner's checkpointed ``extra``), so a resumed run goes on
    counting where it stopped. A work budget is turned into whole iterations up front: the run does
    every iteration whose work fits, floor(work / work per iteration), never more.
    """

    def __init__(self, cfg, work_per_iteration: float, state: dict[str, Any]):
        self.cfg, self.per_iteration = cfg, work_per_iteration
        self.counts = state.setdefault("budget", {"train_seconds": 0.0, "validation_seconds": 0.0, "work": 0.0,
                                                  "evaluations": 0})
        self.counts.setdefault("train_cpu_seconds", 0.0)
        self.counts.setdefault("logging_seconds", 0.0)
        self.planned = cfg.iterations
        if cfg.budget.work is not None and work_per_iteration > 0:
            self.planned = min(cfg.iterations, math.floor(cfg.budget.work / work_per_iteration))

    def fraction(self, iteration: int) -> float:
        """How much of the budget is used, in [0, 1]: drives the outer learning-rate schedule."""
        used = iteration / self.planned if self.planned else 1.0
        if self.cfg.budget.seconds is not None:
            used = max(used, self.counts["train_seconds"] / self.cfg.budget.seconds)
        if self.cfg.budget.cpu_seconds is not None:
            used = max(used, self.counts["train_cpu_seconds"] / self.cfg.budget.cpu_seconds)
        return min(used, 1.0)

    def spent(self, iteration: int) -> bool:
        return self.fraction(iteration) >= 1.0

    def charge(self, began: tuple[float, float], stepped: float, algorithm) -> float:
        """Charge one iteration that began at ``began`` (:func:`clock`) and whose meta-update began at
        ``stepped`` (``time.perf_counter()``, after drawing its tasks): its wall and CPU seconds less
        those the algorithm reports for measuring its logged training fit (kept apart in
        ``logging_seconds``, as validation is), and its work. A data-parallel run is charged its slowest
        process's wall time and all its processes' CPU time, the same on every process, so budgets and
        the outer learning-rate schedule step the replicas alike. Returns the meta-update's own seconds."""
        logging_wall, logging_cpu = algorithm.take_logging_seconds()
        now, now_cpu = clock()
        times = distributed.gather([(now - began[0] - logging_wall, now_cpu - began[1] - logging_cpu)])
        self.counts["train_seconds"] += max(s for s, _ in times)
        self.counts["train_cpu_seconds"] += sum(c for _, c in times)
        self.counts["logging_seconds"] += logging_wall
        self.counts["work"] += self.per_iteration
        return now - stepped - logging_wall

    def validated(self, seconds: float) -> None:
        """Wall seconds of one validation: counted, not charged."""
        self.counts["validation_seconds"] += seconds

    def due(self, iteration: int) -> bool:
        """Validate now? At the end, and every ``eval_interval`` iterations, or with ``budget.evaluations``
        at that many equally spaced fractions of the budget (so trials of different cost per iteration
        report to a pruner at the same points)."""
        if self.spent(iteration):
            return True
        points = self.cfg.budget.evaluations
        if not points:
            return iteration % self.cfg.eval_interval == 0
        reached = math.floor(self.fraction(iteration) * points + 1e-9)
        if reached > self.counts["evaluations"]:
            self.counts["evaluations"] = reached
            return True
        return False

    def row(self) -> dict[str, float]:
        """The columns a metrics row and the summary carry: learning curves against seconds and work."""
        return {k: self.counts[k] for k in ("train_seconds", "train_cpu_seconds", "validation_seconds",
                                            "logging_seconds", "work")}


def parse_budget(text: str) -> dict[str, float]:
    """``--budget`` text: ``300`` or ``300s`` (training seconds), ``cpu:300`` (training seconds of CPU
    time) or ``work:2e6`` (example-passes)."""
    raw = str(text).strip().lower()
    kind, _, value = raw.rpartition(":") if ":" in raw else ("seconds", "", raw)
    kind, value = {"cpu": "cpu_seconds"}.get(kind, kind), value.removesuffix("s")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    from metacompare.errors import UserError

    if kind not in BUDGET_AT_MOST or not 0 < number < math.inf:
        raise UserError(f"--budget {text}: expected training seconds (e.g. 300), CPU seconds (cpu:300) "
                        f"or work:N (e.g. work:2e6)")
    if number > BUDGET_AT_MOST[kind]:
        raise UserError(f"--budget {text}: at most {BUDGET_AT_MOST[kind]:g} {UNIT_WORDS[kind]}; give a smaller budget")
    return {kind: number}


UNIT_WORDS = {"seconds": "seconds (about 3 years)", "cpu_seconds": "CPU seconds (about 3 years)",
              "work": "example-passes"}


def label(budget: dict[str, float]) -> str:
    """A short folder-safe name for a budget: ``300s``, ``cpu300s`` or ``work2e+06``."""
    if "seconds" in budget:
        return f"{budget['seconds']:g}s"
    if "cpu_seconds" in budget:
        return f"cpu{budget['cpu_seconds']:g}s"
    return f"work{budget['work']:g}"
