"""The sample Reptile loop as two algorithms: update rules derived by hand on a one-weight net.

Net: ``f(x) = w·x`` (no bias), MSE loss. On a task whose points all have x = a, y = 0 the loss is
a²w², its gradient 2a²w, so k SGD steps at lr α give w̃ = w (1 − 2αa²)^k. With w = 1, α = 0.1, k = 5:
task A (a = 1): w̃ = 0.8⁵ = 0.32768; task B (a = 2): w̃ = 0.2⁵ = 0.00032.
Mean of w̃ − w over A and B: (−0.67232 − 0.99968) / 2 = −0.836.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from metacompare.algorithms import build_algorithm
from metacompare.config.loading import ConfigError, RunConfig, with_overrides
from metacompare.data import Task
from metacompare.models import mlp
from tests.conftest import make_sine_task


def one_weight_net() -> nn.Linear:
    net = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        net.weight.fill_(1.0)
    return net


def constant_task(a: float) -> Task:
    x = torch.full((2, 1), a, dtype=torch.float64)
    y = torch.zeros(2, 1, dtype=torch.float64)
    return Task(x[:1], y[:1], x[1:], y[1:])


TASKS = [constant_task(1.0), constant_task(2.0)]
MEAN_DELTA = ((0.8**5 - 1) + (0.2**5 - 1)) / 2  # mean of w̃ − w = −0.836


def one_outer_step(algorithm: str, outer_optimizer: str, outer_lr: float) -> float:
    net = one_weight_net()
    cfg = RunConfig(algorithm=algorithm, inner_lr=0.1, inner_steps=5, outer_optimizer=outer_optimizer,
                    outer_lr=outer_lr)
    build_algorithm(net, cfg).meta_train_step(TASKS)
    return net.weight.item()


def test_the_hand_derived_mean_delta():
    assert MEAN_DELTA == pytest.approx(-0.836, abs=1e-12)


@pytest.mark.parametrize("algorithm,expected", [
    ("naive_reptile", 1 + 0.5 * 0.836),        # SGD steps against θ̃ − θ: away from θ̃, to 1.418
    ("naive_reptile_fixed", 1 - 0.5 * 0.836),  # SGD steps against θ − θ̃: towards θ̃, to 0.582
])
def test_one_outer_sgd_step(algorithm, expected):
    assert one_outer_step(algorithm, "sgd", 0.5) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("algorithm,direction", [("naive_reptile", +1), ("naive_reptile_fixed", -1)])
def test_one_outer_adam_step_as_in_the_seed(algorithm, direction):
    """Adam's first step is lr·g/(|g| + eps) per weight (bias corrections cancel): a move of ~lr."""
    g = -direction * 0.836  # the gradient Adam receives
    expected = 1 - 0.01 * g / (abs(g) + 1e-8)
    assert one_outer_step(algorithm, "adam", 0.01) == pytest.approx(expected, abs=1e-12)
    assert (expected - 1) * direction > 0  # seed: up, away from w̃ < 1; fixed: down, towards it


def test_fixed_seed_loop_equals_reptile_over_several_adam_steps():
    """Same tasks, same SGD inner loop: only the deep copy differs, so the weights agree to rounding."""
    tasks = [make_sine_task(seed=s) for s in range(3)]
    torch.manual_seed(0)
    ours = mlp(hidden=(8, 8)).double()
    theirs = copy.deepcopy(ours)
    cfg = dict(inner_lr=0.02, inner_steps=3, outer_optimizer="adam", outer_lr=0.01)
    reptile = build_algorithm(ours, RunConfig(algorithm="reptile", **cfg))
    seed_fixed = build_algorithm(theirs, RunConfig(algorithm="naive_reptile_fixed", **cfg))
    for _ in range(3):
        a, b = reptile.meta_train_step(tasks), seed_fixed.meta_train_step(tasks)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-12)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


def test_the_seed_loop_as_written_makes_adapted_loss_worse():
    """The contract test's counterpart: meta-training with the reversed sign raises the loss after
    adaptation on the very tasks it trains on, while the fixed loop lowers it."""
    tasks = [make_sine_task(seed=s) for s in range(4)]
    after = {}
    for name in ("naive_reptile", "naive_reptile_fixed"):
        torch.manual_seed(0)
        algo = build_algorithm(mlp(hidden=(16, 16)).double(),
                               RunConfig(algorithm=name, inner_lr=0.02, inner_steps=2, outer_lr=0.01))
        before = sum(algo.evaluate(t, 2)[0] for t in tasks)
        for _ in range(30):
            algo.meta_train_step(tasks)
        after[name] = sum(algo.evaluate(t, 2)[0] for t in tasks) / before
    assert after["naive_reptile"] > 1.5 and after["naive_reptile_fixed"] < 0.8, after


@pytest.mark.parametrize("field,value", [("inner_optimizer", "adam"), ("inner_batch_size", 4),
                                         ("inner_loss", "sum"), ("inner_state", "carry")])
def test_the_seed_loop_refuses_knobs_it_would_ignore(field, value):
    """Refused when the config is validated, before any network is built."""
    # inner_state is not in its ``uses``; the others it ``requires`` at one value
    wanted = "ignores it" if field == "inner_state" else f"runs the sample loop's own inner loop .* set {field}: "
    changes = {"inner_optimizer": "adam", field: value} if field == "inner_state" else {field: value}
    with pytest.raises(ConfigError, match=f"^{field}: naive_reptile {wanted}"):
        with_overrides(RunConfig(), algorithm="naive_reptile", **changes)


def test_the_former_names_are_accepted_and_run_the_renamed_algorithms():
    """``seed_reptile`` and ``seed_reptile_fixed`` (the names before the rename) still load: a config or
    a per_algorithm section naming them runs ``naive_reptile`` and ``naive_reptile_fixed``."""
    from metacompare.algorithms import ALGORITHMS
    from metacompare.config.loading import expand

    raw = {"algorithm": ["seed_reptile", "seed_reptile_fixed"], "dataset": "sine", "inner_lr": 0.02,
           "per_algorithm": {"seed_reptile_fixed": {"inner_lr": 0.05}}}
    configs = expand(raw)
    assert [(c.algorithm, c.inner_lr) for c in configs] == [("naive_reptile", 0.02), ("naive_reptile_fixed", 0.05)]
    assert "seed_reptile" not in ALGORITHMS  # listed once, under the name that explains it
    assert expand({"dataset": "sine"}, ["algorithm=seed_reptile"])[0].run_id().startswith("naive_reptile-")
