"""Every fast path (task batching in the grouped network or by ``vmap``, channels_last, bfloat16 autocast)
gives learn2learn's meta-gradient.

Tolerances: float64 to 1e-8 absolute (measured differences are ~1e-15: only summation order changes).
float32: 1e-4 of the largest gradient entry (measured ~1e-6 here; the issue measured up to 4e-3 for
5-step MAML through channels_last, whose convolutions round in another order; 2 steps stay far below).
bfloat16 autocast: a bf16 significand holds 8 bits (relative rounding 2^-9 ≈ 0.2% per operation) and
the error compounds through four conv layers, BatchNorm, the inner steps and, for MAML, the
second-order pass, so elementwise checks are meaningless. The gradient must point the same way
(cosine ≥ 0.98) with a normwise relative error ≤ 20%: measured on this 4-filter test net, cosine
0.987-0.994 and 11-16% (loop and batched alike); the bench reports the same numbers at full size.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metacompare.algorithms import build_algorithm
from metacompare.models import grouped, precision
from metacompare.workflows.bench_worker import IMPLEMENTATIONS, Setting, step_function
from metacompare.config.loading import ConfigError, RunConfig, with_overrides
from metacompare.data import Task
from metacompare.models import conv4, mlp
from tests.conftest import make_sine_task, make_task

LR, STEPS = 0.1, 2


def tiny_conv(dtype, strided=False):
    torch.manual_seed(0)
    return conv4(ways=3, filters=4, image_size=16, strided=strided).to(dtype)


def tasks_of(dtype, count=3):
    return [make_task(seed=i, dtype=dtype) for i in range(count)]


def config(algorithm, **changes) -> RunConfig:
    base = dict(algorithm=algorithm, dataset="omniglot", model="conv4", ways=3, shots=2, query=3, inner_lr=LR,
                inner_steps=STEPS, outer_optimizer="sgd", outer_lr=1e-3, meta_batch_size=3)
    return RunConfig(**{**base, **changes})


def ours(algorithm, dtype, strided=False, tasks=None, **changes):
    """The mean meta-gradient of metacompare's ``meta_train_step`` (left in ``.grad``) and its metrics."""
    cfg = config(algorithm, **changes)
    model = precision.prepare_model(tiny_conv(dtype, strided), cfg)
    batch = [precision.prepare_task(t, cfg) for t in (tasks or tasks_of(dtype))]
    metrics = build_algorithm(model, cfg).meta_train_step(batch)
    return [p.grad.clone() for p in model.parameters()], metrics


def reference(algorithm, dtype, strided=False):
    """The canonical learn2learn loop of the bench (the seed loop for Reptile), same θ and tasks."""
    name = "naive reptile loop" if algorithm == "reptile" else f"learn2learn {algorithm}"
    model = tiny_conv(dtype, strided)
    step_function(IMPLEMENTATIONS[name], Setting(inner_steps=STEPS, inner_lr=LR), model, tasks_of(dtype))()
    return [p.grad.clone() for p in model.parameters()]


def max_abs(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def flat(grads):
    return torch.cat([g.reshape(-1).double() for g in grads])


FAST_PATHS = [{"batch_tasks": True}, {"memory_format": "channels_last"},
              {"batch_tasks": True, "memory_format": "channels_last"}, {"batch_tasks": True, "task_chunk": 2},
              {"vmap": True}, {"vmap": True, "memory_format": "channels_last"}]
ENGINES = {"batched": {"batch_tasks": True}, "vmap": {"vmap": True}}  # the engines that batch the tasks


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "reptile"])
@pytest.mark.parametrize("changes", FAST_PATHS, ids=lambda c: "+".join(f"{k}={v}" for k, v in c.items()))
def test_float64_fast_paths_match_learn2learn(algorithm, changes):
    expected = reference(algorithm, torch.float64)
    assert max(g.abs().max().item() for g in expected) > 1e-3, "degenerate test: the gradient is ~0"
    got, _ = ours(algorithm, torch.float64, inner_optimizer="sgd", **changes)
    assert max_abs(got, expected) <= 1e-8


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "reptile"])
@pytest.mark.parametrize("strided", [False, True], ids=["maxpool", "strided"])
def test_float32_batched_matches_learn2learn(algorithm, strided):
    expected = reference(algorithm, torch.float32, strided)
    got, _ = ours(algorithm, torch.float32, strided, model="conv4_strided" if strided else "conv4",
                  batch_tasks=True)
    scale = max(g.abs().max().item() for g in expected)
    assert max_abs(got, expected) <= 1e-4 * scale


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "reptile"])
@pytest.mark.parametrize("batch_tasks", [False, True], ids=["loop", "batched"])
def test_bfloat16_points_the_same_way(algorithm, batch_tasks):
    expected = flat(reference(algorithm, torch.float32, strided=True))
    got, _ = ours(algorithm, torch.float32, strided=True, model="conv4_strided", precision="bfloat16",
                  batch_tasks=batch_tasks)
    got = flat(got)
    assert torch.isfinite(got).all() and not torch.equal(got, expected), "bf16 should round differently"
    assert F.cosine_similarity(got, expected, dim=0) >= 0.98
    assert (got - expected).norm() <= 0.2 * expected.norm()


def test_bfloat16_reptile_loop_sees_its_updated_weights():
    """Autocast's cast cache once kept feeding Reptile's in-place-updated weights as stale bf16 copies."""
    loop, _ = ours("reptile", torch.float32, strided=True, model="conv4_strided", precision="bfloat16")
    batched, _ = ours("reptile", torch.float32, strided=True, model="conv4_strided", precision="bfloat16",
                      batch_tasks=True)
    assert (flat(loop) - flat(batched)).norm() <= 0.01 * flat(batched).norm()


@pytest.mark.parametrize("engine", ENGINES)
def test_reptile_batched_with_adam_matches_the_loop(engine):
    """Adam is elementwise, so one Adam over the stacked task copies is one Adam per task."""
    loop, loop_metrics = ours("reptile", torch.float64, inner_optimizer="adam", inner_lr=0.01)
    batched, metrics = ours("reptile", torch.float64, inner_optimizer="adam", inner_lr=0.01, **ENGINES[engine])
    assert max_abs(loop, batched) <= 1e-10
    assert metrics["loss"] == pytest.approx(loop_metrics["loss"], abs=1e-10)
    assert metrics["accuracy"] == pytest.approx(loop_metrics["accuracy"], abs=1e-6)  # float32 counts


@pytest.mark.parametrize("algorithm", ["maml", "fomaml"])
@pytest.mark.parametrize("engine", ENGINES)
def test_batched_metrics_equal_the_loop(algorithm, engine):
    _, loop = ours(algorithm, torch.float64)
    _, batched = ours(algorithm, torch.float64, **ENGINES[engine])
    assert set(batched) == {"loss", "accuracy"}
    assert batched["loss"] == pytest.approx(loop["loss"], abs=1e-10)
    assert batched["accuracy"] == pytest.approx(loop["accuracy"], abs=1e-6)  # float32 counts


@pytest.mark.parametrize("engine", ENGINES)
def test_mismatched_task_shapes_fall_back_to_the_loop(engine):
    odd = tasks_of(torch.float64)
    odd[1] = make_task(query=4, seed=9)
    loop, _ = ours("maml", torch.float64, tasks=odd)
    batched, _ = ours("maml", torch.float64, tasks=odd, **ENGINES[engine])
    assert max_abs(loop, batched) == 0.0  # the very same code ran


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "reptile"])
@pytest.mark.parametrize("engine", ENGINES)
def test_batched_regression_mlp_matches_the_loop(algorithm, engine):
    def run(changes):
        torch.manual_seed(0)
        model = mlp().double()
        cfg = RunConfig(algorithm=algorithm, inner_lr=0.01, inner_steps=STEPS, outer_optimizer="sgd", **changes)
        build_algorithm(model, cfg).meta_train_step([make_sine_task(seed=i) for i in range(4)])
        return [p.grad.clone() for p in model.parameters()]

    expected = run({})
    assert max(g.abs().max().item() for g in expected) > 1e-3
    assert max_abs(run(ENGINES[engine]), expected) <= 1e-10


def test_grouped_forward_is_the_per_task_forward():
    model = tiny_conv(torch.float64)
    stacked = {k: torch.stack([v + 0.01 * i for i in range(3)]) for k, v in model.named_parameters()}
    x = torch.stack([t.support_x for t in tasks_of(torch.float64)])
    out = grouped.grouped_forward(model, stacked, x)
    for i in range(3):
        single = torch.func.functional_call(model, {k: v[i] for k, v in stacked.items()}, (x[i],))
        torch.testing.assert_close(out[i], single, rtol=0, atol=1e-12)


def test_fast_path_config_is_validated():
    base = RunConfig(dataset="omniglot", model="conv4", ways=5, shots=1, query=5)
    assert with_overrides(base, precision="bfloat16", batch_tasks=True, memory_format="channels_last").batch_tasks
    with pytest.raises(ConfigError, match="batch_tasks"):
        with_overrides(base, batch_tasks=True, backend="learn2learn")
    with pytest.raises(ConfigError, match="vmap: task batching runs on the metacompare backend only"):
        with_overrides(base, vmap=True, backend="learn2learn")
    with pytest.raises(ConfigError, match="vmap: the vmap engine and the grouped network"):
        with_overrides(base, vmap=True, batch_tasks=True)
    with pytest.raises(ConfigError, match="task_chunk"):
        with_overrides(base, task_chunk=-1)
    with pytest.raises(ConfigError, match="memory_format"):
        with_overrides(base, memory_format="nhwc")
    with pytest.raises(ConfigError, match="precision"):
        with_overrides(base, precision="float16")


def test_channels_last_layout_is_applied():
    cfg = config("maml", memory_format="channels_last")
    model = precision.prepare_model(tiny_conv(torch.float32), cfg)
    assert model[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    task = precision.prepare_task(make_task(dtype=torch.float32), cfg)
    assert task.query_x.is_contiguous(memory_format=torch.channels_last)
    assert isinstance(task, Task)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-14), (torch.float32, 1e-6)])
def test_foreach_adam_equals_the_per_tensor_formula(dtype, tolerance):
    """A first-order Adam step runs on ``torch._foreach_*`` kernels; with a graph to keep (second order)
    it runs the per-tensor formula. Both are the same step: seven carried steps on a subset of the
    parameters (the others pass through untouched, as Finn et al.'s BatchNorm offsets do)."""
    from metacompare.algorithms.inner import Adam

    torch.manual_seed(0)
    params = {name: torch.randn(4, 3, dtype=dtype) for name in ("a", "b", "frozen")}
    optimizer = Adam(0.01, (0.0, 0.999))
    fast, fast_state = dict(params), optimizer.init({k: params[k] for k in ("a", "b")})
    slow, slow_state = dict(params), optimizer.init({k: params[k] for k in ("a", "b")})
    for step in range(7):
        grads = {k: torch.randn(4, 3, dtype=dtype) * 10 ** (step % 3 - 1) for k in ("a", "b")}
        fast, fast_state = optimizer.update(fast, grads, fast_state)
        tracked = {k: g.clone().requires_grad_() for k, g in grads.items()}  # forces the per-tensor path
        slow, slow_state = optimizer.update(slow, tracked, slow_state)
        slow = {k: v.detach() for k, v in slow.items()}
        assert not any(t.requires_grad for t in fast.values())
    assert fast["frozen"] is params["frozen"]
    assert fast_state.step == slow_state.step == 7
    for k in ("a", "b"):
        assert torch.allclose(fast[k], slow[k], rtol=0, atol=tolerance * params[k].abs().max())
        assert torch.allclose(fast_state.v[k], slow_state.v[k].detach(), rtol=tolerance, atol=0)
        assert not torch.equal(fast[k], params[k])  # the step moved them
