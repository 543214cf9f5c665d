"""Update rules and meta-gradients, checked against hand computations and finite differences."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F

from metacompare.algorithms import ALGORITHMS, build_algorithm
from metacompare.algorithms.naive_reptile import naive_reptile_step
from metacompare.config.loading import RunConfig
from metacompare.models import conv4, mlp
from metacompare.engines.looped import task_gradient
from tests.conftest import make_sine_task, make_task


def conv_config(**changes) -> RunConfig:
    base = dict(dataset="omniglot", model="conv4", ways=3, shots=2, query=3, inner_lr=0.1, inner_steps=2)
    return RunConfig(**{**base, **changes})


def tiny_conv(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return conv4(ways=3, filters=4, image_size=16).to(dtype)


def meta_gradient(algorithm: str, backend: str, dtype: torch.dtype, steps: int = 2) -> list[torch.Tensor]:
    model = tiny_conv(dtype)
    algo = build_algorithm(model, conv_config(algorithm=algorithm, backend=backend, inner_steps=steps))
    return task_gradient(algo, make_task(dtype=dtype)).grads


@pytest.mark.parametrize("algorithm", ["maml", "fomaml"])
@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_backends_give_the_same_meta_gradient(algorithm, dtype, tolerance):
    reference = meta_gradient(algorithm, "learn2learn", dtype)
    assert any(g.abs().max() > 1e-3 for g in reference), "degenerate test: the gradient is ~0"
    for backend in ("higher", "metacompare"):
        other = meta_gradient(algorithm, backend, dtype)
        worst = max((a - b).abs().max().item() for a, b in zip(reference, other))
        assert worst <= tolerance, f"{backend} differs from learn2learn by {worst}"


def test_maml_differs_from_fomaml():
    """Guards the test above: the second-order term must actually be present."""
    maml, fomaml = meta_gradient("maml", "metacompare", torch.float64), meta_gradient("fomaml", "metacompare", torch.float64)
    assert max((a - b).abs().max().item() for a, b in zip(maml, fomaml)) > 1e-4


def _sine_objective(model, params, task, lr, steps):
    """L_query(θ̃(θ)) for a functional MLP, plain autograd: the quantity MAML differentiates."""
    from torch.func import functional_call

    names = [n for n, _ in model.named_parameters()]
    current = dict(zip(names, params))
    for _ in range(steps):
        loss = F.mse_loss(functional_call(model, current, (task.support_x,)), task.support_y)
        grads = torch.autograd.grad(loss, list(current.values()), create_graph=True)
        current = {n: p - lr * g for (n, p), g in zip(current.items(), grads)}
    return F.mse_loss(functional_call(model, current, (task.query_x,)), task.query_y)


@pytest.mark.parametrize("backend", ["metacompare", "learn2learn", "higher"])
def test_maml_matches_central_finite_differences(backend):
    torch.manual_seed(0)
    model = mlp(hidden=(5,)).double()
    task = make_sine_task()
    cfg = RunConfig(algorithm="maml", backend=backend, inner_lr=0.05, inner_steps=2)
    analytic = task_gradient(build_algorithm(model, cfg), task).grads
    base = [p.detach().clone() for p in model.parameters()]
    eps = 1e-6
    for which, param in enumerate(base):
        for index in itertools.product(*map(range, param.shape)):
            values = []
            for sign in (1, -1):
                shifted = [p.clone().requires_grad_() for p in base]
                with torch.no_grad():
                    shifted[which][index] += sign * eps
                values.append(_sine_objective(model, shifted, task, 0.05, 2).item())
            numeric = (values[0] - values[1]) / (2 * eps)
            assert analytic[which][index].item() == pytest.approx(numeric, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("backend", ["metacompare", "learn2learn", "higher"])
def test_fomaml_gradient_is_query_gradient_at_adapted_weights(backend):
    torch.manual_seed(1)
    model = mlp(hidden=(8, 8)).double()
    task = make_sine_task(seed=3)
    lr, steps = 0.02, 3
    fomaml = build_algorithm(model, RunConfig(algorithm="fomaml", backend=backend, inner_lr=lr, inner_steps=steps))
    got = task_gradient(fomaml, task).grads
    # By hand: plain SGD on a copy, then the ordinary gradient of the query loss there.
    adapted = copy.deepcopy(model)
    for _ in range(steps):
        adapted.zero_grad()
        F.mse_loss(adapted(task.support_x), task.support_y).backward()
        with torch.no_grad():
            for p in adapted.parameters():
                p -= lr * p.grad
    adapted.zero_grad()
    F.mse_loss(adapted(task.query_x), task.query_y).backward()
    for g, p in zip(got, adapted.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", ["metacompare", "learn2learn"])
def test_reptile_outer_update_is_epsilon_times_mean_difference(backend):
    torch.manual_seed(2)
    model = mlp(hidden=(8,)).double()
    tasks = [make_sine_task(seed=s) for s in range(4)]
    eps, lr, steps = 0.3, 0.01, 4
    cfg = RunConfig(algorithm="reptile", backend=backend, inner_lr=lr, inner_steps=steps,
                    outer_optimizer="sgd", outer_lr=eps)
    theta = [p.detach().clone() for p in model.parameters()]
    tildes = []
    for task in tasks:  # by hand: plain SGD from θ on all of the task's data
        work = copy.deepcopy(model)
        for _ in range(steps):
            work.zero_grad()
            F.mse_loss(work(task.all_x), task.all_y).backward()
            with torch.no_grad():
                for p in work.parameters():
                    p -= lr * p.grad
        tildes.append([p.detach() for p in work.parameters()])
    build_algorithm(model, cfg).meta_train_step(tasks)
    for i, (new, old) in enumerate(zip(model.parameters(), theta)):
        expected = old + eps * sum(t[i] - old for t in tildes) / len(tasks)
        torch.testing.assert_close(new.detach(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("outer", ["sgd", "adam"])
def test_seed_loop_with_fixed_sign_equals_the_plugin(outer):
    tasks = [make_task(seed=s) for s in range(3)]
    cfg = conv_config(algorithm="reptile", inner_steps=3, inner_lr=0.05, outer_optimizer=outer, outer_lr=0.5)
    ours, seeds = tiny_conv(), tiny_conv()
    seed_optim = torch.optim.SGD(seeds.parameters(), lr=0.5) if outer == "sgd" else torch.optim.Adam(seeds.parameters(), lr=0.5)
    algo = build_algorithm(ours, cfg)
    for _ in range(2):
        algo.meta_train_step(tasks)
        naive_reptile_step(seeds, [(t.all_x, t.all_y) for t in tasks], seed_optim, 0.05, 3, F.cross_entropy)
    # The inner steps round differently (our functional θ − α·g against torch's fused in-place add), by
    # ~1e-16 relative; an outer Adam divides each entry by its own gradient scale, which turns that into
    # up to ~1e-8 relative on entries whose gradient is tiny (measured 4e-9). SGD keeps it at 1e-16.
    rtol = 1e-10 if outer == "sgd" else 1e-7
    for a, b in zip(ours.parameters(), seeds.parameters()):
        torch.testing.assert_close(a, b, rtol=rtol, atol=1e-12 if outer == "sgd" else 1e-9)


def test_seed_loop_as_written_moves_away_from_the_adapted_weights():
    tasks = [make_task(seed=s) for s in range(2)]
    model = tiny_conv()
    before = [p.detach().clone() for p in model.parameters()]
    ref = copy.deepcopy(model)
    build_algorithm(ref, conv_config(algorithm="reptile", inner_steps=3, inner_lr=0.05, outer_optimizer="sgd",
                                     outer_lr=0.5)).meta_train_step(tasks)
    naive_reptile_step(model, [(t.all_x, t.all_y) for t in tasks], torch.optim.SGD(model.parameters(), lr=0.5),
                       0.05, 3, F.cross_entropy, fixed_sign=False)
    for bad, good, old in zip(model.parameters(), ref.parameters(), before):
        torch.testing.assert_close(bad - old, -(good - old), rtol=1e-10, atol=1e-12)


# `scratch` is the no-learning baseline: by design nothing carries over between tasks, so it cannot
# pass this test; tests/test_baselines.py checks that it stays at its initialisation instead.
# `naive_reptile` is the sample loop with its reversed sign: tests/test_naive_reptile.py checks that it gets worse.
NOT_LEARNING_ACROSS_TASKS = {"scratch", "naive_reptile"}


@pytest.mark.parametrize("name", sorted(set(ALGORITHMS) - NOT_LEARNING_ACROSS_TASKS))
def test_every_algorithm_learns_a_fixed_task_set(name):
    """Contract test over the registry: a few meta-steps on 4 tasks lower the post-adaptation loss."""
    torch.manual_seed(0)
    model = mlp(hidden=(16, 16)).double()
    cfg = RunConfig(algorithm=name, inner_lr=0.02, inner_steps=2, outer_lr=0.01,
                    outer_optimizer="adam")
    algo = build_algorithm(model, cfg)
    tasks = [make_sine_task(seed=s) for s in range(4)]
    before = sum(algo.evaluate(t, 2)[0] for t in tasks)
    for _ in range(60):
        metrics = algo.meta_train_step(tasks)
        assert set(metrics) >= {"loss"}
    after = sum(algo.evaluate(t, 2)[0] for t in tasks)
    assert after < 0.8 * before
