"""ANIL and Meta-SGD: meta-gradients against finite differences and exact reductions to MAML."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from metacompare.algorithms import build_algorithm
from metacompare.config.loading import RunConfig
from metacompare.models import mlp
from metacompare.engines.looped import task_gradient
from tests.conftest import make_sine_task, make_task


def central_differences(objective, base: list[torch.Tensor], eps: float = 1e-6) -> list[torch.Tensor]:
    """d objective / d base, entry by entry, from (f(x + eps) - f(x - eps)) / 2 eps in float64."""
    numeric = [torch.zeros_like(b) for b in base]
    for which, tensor in enumerate(base):
        for index in itertools.product(*map(range, tensor.shape)):
            values = []
            for sign in (1, -1):
                shifted = [b.clone() for b in base]
                shifted[which][index] += sign * eps
                values.append(objective(shifted).item())
            numeric[which][index] = (values[0] - values[1]) / (2 * eps)
    return numeric


def assert_all_close(got: list[torch.Tensor], expected: list[torch.Tensor], rtol=1e-6, atol=1e-8) -> None:
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------------------------- ANIL
def _anil_objective(model, params, task, lr, steps):
    """Query loss after ``steps`` SGD steps on the last layer only, body frozen at its given weights."""
    names = [n for n, _ in model.named_parameters()]
    current = dict(zip(names, [p.clone().requires_grad_() for p in params]))
    head_names = names[-2:]
    for _ in range(steps):
        loss = F.mse_loss(functional_call(model, current, (task.support_x,)), task.support_y)
        grads = torch.autograd.grad(loss, [current[n] for n in head_names])
        for n, g in zip(head_names, grads):
            current[n] = current[n] - lr * g
    return F.mse_loss(functional_call(model, current, (task.query_x,)), task.query_y)


def test_anil_meta_gradient_matches_central_finite_differences():
    torch.manual_seed(0)
    model = mlp(hidden=(5,)).double()
    task = make_sine_task(seed=4)
    lr, steps = 0.05, 2
    analytic = task_gradient(build_algorithm(model, RunConfig(algorithm="anil", inner_lr=lr, inner_steps=steps)), task).grads
    base = [p.detach().clone() for p in model.parameters()]
    numeric = central_differences(lambda ps: _anil_objective(model, ps, task, lr, steps), base)
    assert analytic[0].abs().max() > 1e-3, "degenerate test: no gradient reaches the body"
    assert_all_close(analytic, numeric)


def test_anil_is_maml_when_the_body_has_no_parameters():
    """Flatten + Linear: the head is the whole model, so head-only adaptation is MAML, to rounding."""
    task = make_task(ways=3, shots=2, query=3, size=6, seed=1)
    grads = {}
    for name in ("anil", "maml"):
        torch.manual_seed(3)
        model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3)).double()
        cfg = RunConfig(algorithm=name, dataset="omniglot", model="conv4", ways=3, shots=2, query=3,
                        inner_lr=0.3, inner_steps=3)
        grads[name] = task_gradient(build_algorithm(model, cfg), task).grads
    assert grads["maml"][0].abs().max() > 1e-3
    for a, m in zip(grads["anil"], grads["maml"]):
        torch.testing.assert_close(a, m, rtol=1e-12, atol=1e-14)


def test_anil_differs_from_maml_when_the_body_has_parameters():
    """Guards the test above: with a body, freezing it in the inner loop must change the gradient."""
    task = make_sine_task(seed=2)
    grads = {}
    for name in ("anil", "maml"):
        torch.manual_seed(0)
        model = mlp(hidden=(8,)).double()
        grads[name] = task_gradient(build_algorithm(model, RunConfig(algorithm=name, inner_lr=0.05, inner_steps=2)), task).grads
    assert max((a - m).abs().max().item() for a, m in zip(grads["anil"], grads["maml"])) > 1e-4


def test_anil_adaptation_changes_only_the_head():
    torch.manual_seed(1)
    model = mlp(hidden=(8, 8)).double()
    task = make_sine_task(seed=5)
    lr, steps = 0.03, 4
    predict = build_algorithm(model, RunConfig(algorithm="anil", inner_lr=lr)).adapt(task, steps)
    by_hand = copy.deepcopy(model)  # plain SGD on the last layer's weight and bias, nothing else
    for _ in range(steps):
        by_hand.zero_grad()
        F.mse_loss(by_hand(task.support_x), task.support_y).backward()
        with torch.no_grad():
            for p in by_hand[-1].parameters():
                p -= lr * p.grad
    with torch.no_grad():
        torch.testing.assert_close(predict(task.query_x), by_hand(task.query_x), rtol=1e-12, atol=1e-12)
        assert not torch.allclose(predict(task.query_x), model(task.query_x))


def test_anil_rejects_a_model_without_a_linear_head():
    """A network built by hand (no config names one without a linear head: tests/test_capabilities.py)."""
    model = nn.Sequential(nn.Linear(1, 4), nn.ReLU())
    with pytest.raises(TypeError, match="anil needs an nn.Sequential ending in an nn.Linear"):
        build_algorithm(model, RunConfig(algorithm="anil"))


# ----------------------------------------------------------------------------------------- Meta-SGD
def _metasgd_objective(model, params, rates, task, steps):
    """L_query(θ̃) with θ̃ from ``steps`` steps θ ← θ − α ⊙ ∇L_support(θ)."""
    names = [n for n, _ in model.named_parameters()]
    current = [p.clone().requires_grad_() for p in params]
    for _ in range(steps):
        loss = F.mse_loss(functional_call(model, dict(zip(names, current)), (task.support_x,)), task.support_y)
        grads = torch.autograd.grad(loss, current, create_graph=True)
        current = [p - a * g for p, a, g in zip(current, rates, grads)]
    return F.mse_loss(functional_call(model, dict(zip(names, current)), (task.query_x,)), task.query_y)


def test_metasgd_gradients_match_central_finite_differences():
    torch.manual_seed(0)
    model = mlp(hidden=(4,)).double()
    task = make_sine_task(seed=6)
    algo = build_algorithm(model, RunConfig(algorithm="metasgd", inner_lr=0.05, inner_steps=2))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # per-entry rates, so a bug that averages or shares them would show
        for a in algo.inner_lrs:
            a.copy_(0.01 + 0.09 * torch.rand(a.shape, generator=g, dtype=a.dtype))
    analytic = task_gradient(algo, task).grads
    theta = [p.detach().clone() for p in model.parameters()]
    alpha = [a.detach().clone() for a in algo.inner_lrs]
    n = len(theta)
    numeric = central_differences(lambda xs: _metasgd_objective(model, xs[:n], xs[n:], task, 2), theta + alpha)
    assert len(analytic) == 2 * n
    assert min(a.abs().max().item() for a in analytic[n:]) > 1e-4, "degenerate test: zero rate gradient"
    assert_all_close(analytic, numeric)


def test_metasgd_starts_as_maml():
    """With every rate equal to inner_lr, Meta-SGD's θ-gradient is MAML's meta-gradient exactly."""
    task = make_sine_task(seed=7)
    grads = {}
    for name in ("metasgd", "maml"):
        torch.manual_seed(2)
        model = mlp(hidden=(6, 6)).double()
        grads[name] = task_gradient(build_algorithm(model, RunConfig(algorithm=name, inner_lr=0.04, inner_steps=3)), task).grads
    assert len(grads["metasgd"]) == 2 * len(grads["maml"])
    for a, m in zip(grads["metasgd"], grads["maml"]):
        torch.testing.assert_close(a, m, rtol=1e-12, atol=1e-14)


def test_metasgd_learns_its_rates_and_they_survive_a_state_dict_round_trip():
    torch.manual_seed(0)
    model = mlp(hidden=(8,)).double()
    cfg = RunConfig(algorithm="metasgd", inner_lr=0.02, inner_steps=1, outer_lr=0.01)
    algo = build_algorithm(model, cfg)
    tasks = [make_sine_task(seed=s) for s in range(3)]
    for _ in range(5):
        algo.meta_train_step(tasks)
    rates = [a.detach().clone() for a in algo.inner_lrs]
    assert max((r - 0.02).abs().max().item() for r in rates) > 1e-3, "the rates never moved"
    restored = build_algorithm(mlp(hidden=(8,)).double(), cfg)
    restored.load_state_dict(algo.state_dict())
    for mine, theirs in zip(restored.inner_lrs, rates):
        torch.testing.assert_close(mine.detach(), theirs, rtol=0, atol=0)
    t = make_sine_task(seed=9)
    assert restored.evaluate(t, 3) == algo.evaluate(t, 3)
