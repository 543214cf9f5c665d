"""Adding an algorithm (docs/guide/add-algorithm.md): one class with one method, registered, runs on
every engine and meets the contract every built-in algorithm meets.

The toy is MAML with a single full-batch SGD step, defined here exactly as the guide shows it (a test
checks the guide's code is this code), registered for one test and unregistered after.
"""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path

import pytest
import torch

from metacompare.algorithms import ALGORITHMS
from metacompare.config.loading import RunConfig, with_overrides
from metacompare.engines import COMPILED, ENGINES, parallel
from metacompare.models import mlp
from tests.conftest import make_sine_task
from tests.faults import one_torch_thread
from tests.test_contract import check_contract

one_thread = pytest.fixture(autouse=True)(one_torch_thread)
GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide" / "add-algorithm.md"


def define():
    """The guide's file, as one function so that the test registers it only while it runs."""
    from metacompare.algorithms import inner
    from metacompare.algorithms.base import MetaAlgorithm, Objective
    from metacompare.algorithms.registry import register

    @register
    class OneStep(MetaAlgorithm):
        """MAML with one full-batch SGD step (Finn, Abbeel & Levine 2017, eq. 1)."""

        name = "one_step"
        uses = frozenset({"batch_tasks", "vmap"})  # the engines it runs on besides the looped one
        compilable = True  # compile: true may trace it (plain torch code, no .item() or Python branches)

        def task_objective(self, net, params, task):
            loop = inner.InnerLoop(inner.SGD(self.cfg.inner_lr), steps=1, second_order=True)
            adapted = net.adapt(net.forward, params, task.support_x, task.support_y, loop)

            def query_loss(p):
                return inner.task_loss(net.forward(p, task.query_x), task.query_y).mean()
            return Objective(adapted, query_loss, task.support_x, task.support_y)

    return OneStep


@pytest.fixture
def one_step():
    cls = define()
    yield cls
    del ALGORITHMS[cls.name]


def gradients(engine, cfg: RunConfig) -> list[torch.Tensor]:
    """The engine's mean meta-gradient of 4 fixed sine tasks, from one fixed θ (float64)."""
    torch.manual_seed(0)
    algorithm = ALGORITHMS[cfg.algorithm](mlp().double(), cfg)
    return engine(algorithm, [make_sine_task(seed=i) for i in range(4)]).grads


def test_a_registered_algorithm_runs_on_every_engine(one_step):
    """Looped, grouped, vmap, compiled and data-parallel (one process here; tests/test_distributed.py
    runs two) engines give the same meta-gradient (float64, 1e-10), and it is MAML's with one step."""
    cfg = with_overrides(RunConfig(), algorithm="one_step", inner_lr=0.01, outer_optimizer="sgd")
    expected = gradients(ENGINES["looped"], cfg)
    assert max(g.abs().max().item() for g in expected) > 1e-3, "degenerate test: the gradient is ~0"
    engines = {**ENGINES, "compiled": COMPILED["looped"], "data-parallel": parallel.split_gradient}
    for name, engine in engines.items():
        for got, want in zip(gradients(engine, cfg), expected):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-10, msg=name)
    maml = with_overrides(cfg, algorithm="maml", inner_steps=1)
    for got, want in zip(gradients(ENGINES["looped"], maml), expected):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_a_registered_algorithm_meets_the_contract(one_step):
    check_contract("one_step")


def test_the_guide_shows_this_code():
    """The guide's example is the class above, line for line."""
    lines = inspect.getsource(define).splitlines()[2:-2]  # between the docstring and the return
    assert textwrap.dedent("\n".join(lines)).strip() in GUIDE.read_text()
