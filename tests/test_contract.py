"""One contract, run over every registered algorithm (optax's test over its registry, in spirit).

For each name in ``ALGORITHMS`` (read from the registry, so a new plug-in is tested by being
registered) and each kind of task, sine regression, digit classification and digit classification
through a toy-width ResNet-12 (residual blocks, in the grouped engine too), in float64:

- an outer step changes exactly ``meta_parameters()``, by the outer SGD step of the engine's gradient,
  which is parallel to them (same shapes) and finite; every other tensor stays bitwise the same;
- ``state_dict`` round-trips: loaded into a fresh instance, the next step is bitwise the same;
- evaluation leaves θ, the gradients, the outer optimiser's state and a carried inner state untouched;
- each engine that batches the tasks (the grouped network, ``vmap``) equals the looped one (1e-10)
  wherever the plug-in declares it (``batch_tasks`` or ``vmap`` in ``uses``), and a config asking for it
  is refused elsewhere;
- a seeded run (initialisation, task sampling, steps, validation) repeats bitwise.

Each config is the richest the plug-in accepts: an algorithm that declares ``inner_state`` in ``uses``
carries an inner Adam state across tasks, so that state is round-tripped and protected too.
What the other test files already assert per algorithm (hand-derived updates, finite differences,
agreement with learn2learn) is not repeated here.
"""

from __future__ import annotations

import copy
import functools
import math
import random
import re

import pytest
import torch

from metacompare.models import precision

from metacompare.training import scoring
from metacompare.algorithms import ALGORITHMS
from metacompare.algorithms.base import MetaAlgorithm
from metacompare.config.loading import ConfigError
from metacompare.engines import ENGINES
from metacompare.engines.looped import looped_gradient
from metacompare.training.build import Run, build_for, build_network, build_run, seed_everything
from metacompare.config.loading import EvalProcedure, RunConfig, with_overrides
from tests.faults import one_torch_thread

one_thread = pytest.fixture(autouse=True)(one_torch_thread)  # as a run computes, and fast on shared cores

KINDS = {
    "sine": dict(dataset="sine", model="mlp", ways=1, shots=5, query=5, inner_lr=0.02),
    "digits": dict(dataset="digits", model="metamodel", ways=3, shots=2, query=3, inner_lr=0.1),
    # ResNet-12 at toy widths on the same digits (28x28 grey): residual blocks, grouped branches
    "resnet12": dict(dataset="digits", model="resnet12", resnet12={"widths": [2, 3, 2, 3]}, ways=3, shots=2,
                     query=3, inner_lr=0.1),
}
COMMON = dict(inner_steps=2, meta_batch_size=2, eval_episodes=2, test_episodes=2, eval_inner_steps=2,
              precision="float64", outer_optimizer="adam", outer_lr=0.01, tracker="none")
CASES = [(name, kind) for name in sorted(ALGORITHMS) for kind in KINDS]


def config(name: str, kind: str, carry: bool = True, **changes) -> RunConfig:
    """The contract's config for ``name``: with a carried inner Adam state where the plug-in reads one."""
    values = {**COMMON, **KINDS[kind], "algorithm": name, **changes}
    if carry and "inner_state" in ALGORITHMS[name].uses:
        values.update(inner_optimizer="adam", inner_state="carry", inner_lr=0.01)
    return with_overrides(RunConfig(), **values)


@functools.cache
def built(kind: str) -> Run:
    """One run built per kind of task; its splits are shared by every test (never mutated)."""
    return build_run(config("maml", kind))


@functools.cache
def batches(kind: str, count: int = 2) -> tuple[list, ...]:
    """``count`` fixed meta-batches of training tasks in the run's dtype."""
    run = built(kind)
    rng_state = run.tasks.train.rng.getstate()
    drawn = tuple([run.tasks.train.sample().to(run.device, run.dtype) for _ in range(COMMON["meta_batch_size"])]
                  for _ in range(count))
    run.tasks.train.rng.setstate(rng_state)
    return drawn


def fresh(cfg: RunConfig) -> MetaAlgorithm:
    """The algorithm of ``cfg`` around its freshly initialised network (from ``cfg.seed``), as a run builds it."""
    return build_for(build_network(cfg), cfg, num_classes=built(_kind(cfg)).tasks.train.num_classes)


def _kind(cfg: RunConfig) -> str:
    return "sine" if cfg.dataset == "sine" else "resnet12" if cfg.model == "resnet12" else "digits"


def tensors(algorithm: MetaAlgorithm) -> dict[int, torch.Tensor]:
    """Every tensor the algorithm holds, by identity: the model's parameters and buffers, its meta-parameters."""
    found = {id(t): t for t in algorithm.model.parameters()}
    found.update({id(t): t for t in algorithm.model.buffers()})
    found.update({id(t): t for t in algorithm.meta_parameters()})
    return found


def assert_same(a, b, where: str = "state") -> None:
    """Bitwise equality of nested dicts, lists and tensors (NaN equal to NaN)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype, where
        assert torch.equal(a, b) or (torch.isnan(a) == torch.isnan(b)).all() and torch.equal(
            a.nan_to_num(), b.nan_to_num()), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys differ"
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def snapshot(algorithm: MetaAlgorithm) -> dict:
    """A deep copy of everything evaluation must not change."""
    return copy.deepcopy({"state": algorithm.state_dict(),
                          "meta": [p.detach() for p in algorithm.meta_parameters()],
                          "grads": [p.grad for p in algorithm.meta_parameters()],
                          "buffers": dict(algorithm.model.named_buffers())})


@pytest.mark.parametrize("name,kind", CASES)
def test_an_outer_step_moves_exactly_the_meta_parameters(name, kind):
    """θ_new = θ − lr·g for every meta-parameter (outer SGD), with g the engine's gradient; nothing else moves."""
    lr = 0.05
    algorithm = fresh(config(name, kind, outer_optimizer="sgd", outer_lr=lr))
    before = {key: t.detach().clone() for key, t in tensors(algorithm).items()}
    meta = algorithm.meta_parameters()
    recorded = []

    def recording(algo, tasks):
        recorded.append(looped_gradient(algo, tasks))
        return recorded[-1]

    metrics = algorithm.meta_train_step(batches(kind)[0], engine=recording)
    assert math.isfinite(metrics["loss"]) and ("accuracy" in metrics) == (kind != "sine")
    if not recorded:  # the plug-in takes no outer step (the scratch baseline): nothing may move
        grads = [torch.zeros_like(p) for p in meta]
    else:
        grads = recorded[0].grads
    assert [g.shape for g in grads] == [p.shape for p in meta]
    assert all(torch.isfinite(g).all() for g in grads)
    for p, g in zip(meta, grads):
        torch.testing.assert_close(p.detach(), before[id(p)] - lr * g, rtol=1e-14, atol=1e-15)
    others = set(before) - {id(p) for p in meta}
    for key in others:
        assert torch.equal(tensors(algorithm)[key], before[key]), "a tensor outside meta_parameters() moved"
    if recorded and name != "scratch":
        assert any(g.abs().max() > 0 for g in grads), "degenerate test: a zero meta-gradient"


@pytest.mark.parametrize("name,kind", CASES)
def test_state_dict_round_trips_into_a_fresh_instance(name, kind):
    first, second = batches(kind)
    cfg = config(name, kind)
    trained = fresh(cfg)
    trained.meta_train_step(first)  # outer Adam moments and any carried inner state now exist
    loaded = fresh(cfg)
    with torch.no_grad():  # so that only the load can make them equal
        for p in loaded.meta_parameters():
            p.add_(1.0)
    loaded.load_state_dict(copy.deepcopy(trained.state_dict()))
    assert_same(trained.state_dict(), loaded.state_dict())
    assert_same(trained.meta_train_step(second), loaded.meta_train_step(second), "metrics")
    assert_same(trained.state_dict(), loaded.state_dict())
    assert_same([p.detach() for p in trained.meta_parameters()], [p.detach() for p in loaded.meta_parameters()])


@pytest.mark.parametrize("name,kind", CASES)
def test_evaluation_leaves_theta_and_the_optimisers_untouched(name, kind):
    algorithm = fresh(config(name, kind))
    algorithm.meta_train_step(batches(kind)[0])
    before = snapshot(algorithm)
    episodes = built(kind).tasks.validation
    common = EvalProcedure(optimizer="adam", lr=0.01, steps=2)
    for procedure in (None, common):
        scores = scoring.evaluate(algorithm, episodes, 3, built(kind).device, built(kind).dtype, procedure)
        assert math.isfinite(scores["loss_mean"])
    assert_same(before, snapshot(algorithm))


BATCHING = {"batched": "batch_tasks", "vmap": "vmap"}  # engine: the config field that asks for it


@pytest.mark.parametrize("engine", BATCHING)
@pytest.mark.parametrize("name,kind", CASES)
def test_each_declared_engine_equals_the_looped_one(name, kind, engine):
    field = BATCHING[engine]
    if field not in ALGORITHMS[name].uses:
        with pytest.raises(ConfigError, match=re.escape(f"{field}: {name} ignores it")):
            config(name, kind, carry=False, **{field: True})
        return
    cfg = config(name, kind, carry=False)  # a carried state chains the tasks: no batched form by design
    tasks = batches(kind)[0]
    loop = looped_gradient(fresh(cfg), tasks)
    batched = ENGINES[engine](fresh(config(name, kind, carry=False, **{field: True})), tasks)
    for a, b in zip(batched.grads, loop.grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    assert batched.loss == pytest.approx(loop.loss, abs=1e-10)
    assert batched.loss == pytest.approx(loop.loss, abs=1e-10)
    assert (batched.accuracy is None) == (loop.accuracy is None)
    if loop.accuracy is not None:
        assert batched.accuracy == pytest.approx(loop.accuracy, abs=1e-6)  # counted in float32


def seeded_run(cfg: RunConfig, iterations: int = 2) -> tuple:
    """Initialise from ``cfg.seed``, sample and train ``iterations`` meta-batches, validate: as the runner does."""
    run = built(_kind(cfg))
    seed_everything(cfg.seed)
    rng_state = run.tasks.train.rng.getstate()
    run.tasks.train.rng.seed(cfg.seed)
    algorithm = build_for(build_network(cfg), cfg, num_classes=run.tasks.train.num_classes)
    metrics = []
    for _ in range(iterations):
        batch = [precision.prepare_task(run.tasks.train.sample().to(run.device, run.dtype), cfg)
                 for _ in range(cfg.meta_batch_size)]
        metrics.append(algorithm.meta_train_step(batch))
    metrics.append(scoring.evaluate(algorithm, run.tasks.validation, cfg.eval_inner_steps, run.device, run.dtype))
    run.tasks.train.rng.setstate(rng_state)
    return metrics, copy.deepcopy(algorithm.state_dict()), random.random(), torch.rand(1)


@pytest.mark.parametrize("name,kind", CASES)
def test_a_seeded_run_repeats_bitwise(name, kind):
    cfg = config(name, kind)
    assert_same(seeded_run(cfg), seeded_run(cfg), "run")


def check_contract(name: str) -> None:
    """Every check above for one algorithm on every kind of task: what a new plug-in's own test calls
    (tests/test_add_algorithm.py) to meet the contract without copying it."""
    for kind in KINDS:
        test_an_outer_step_moves_exactly_the_meta_parameters(name, kind)
        test_state_dict_round_trips_into_a_fresh_instance(name, kind)
        test_evaluation_leaves_theta_and_the_optimisers_untouched(name, kind)
        for engine in BATCHING:
            test_each_declared_engine_equals_the_looped_one(name, kind, engine)
        test_a_seeded_run_repeats_bitwise(name, kind)
