"""``compile: true`` (metacompare.engines.torch_compile): the torch.compile'd step gives the eager meta-gradient.

The compiled step is an engine's pure form (:mod:`metacompare.engines.compiled`): the algorithm's one
objective differentiated by ``torch.func``, for one task, the grouped network or under ``vmap``.
Run eagerly it must equal the autograd form to float64 rounding (≤ 1e-10, measured ~1e-15): that is
the algebra, checked fast. Compiled, Inductor reorders reductions, so again ≤ 1e-10 in float64
(measured 1e-16 to 2e-15 on this test net): slow, since each compilation takes 30-170 s on a loaded
2-core machine.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metacompare.engines import torch_compile as compiled
from metacompare.algorithms import build_algorithm
from metacompare.engines import batched, vmap
from metacompare.engines import compiled as compiled_engine
from metacompare.engines.looped import task_gradient
from metacompare.config.loading import ConfigError, RunConfig, with_overrides
from tests.test_fast_paths import config, flat, max_abs, ours, reference, tasks_of, tiny_conv


def pure_gradient(algo, tasks: list, form: str) -> tuple:
    """The engine's pure form (``task``: the first task alone; ``stack``: the grouped network; ``vmap``)
    run eagerly on detached meta-parameters."""
    params = {k: v.detach() for k, v in algo.named_meta_parameters().items()}
    if form == "task":
        t = tasks[0]
        return compiled_engine.task_pure(algo)(params, t.support_x, t.support_y, t.query_x, t.query_y)
    s = batched.stack(tasks)
    pure = batched.grouped_pure(algo) if form == "stack" else vmap.vmapped(algo, not s.query_y.is_floating_point())
    return pure(params, s.support_x, s.support_y, s.query_x, s.query_y)


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "reptile"])
@pytest.mark.parametrize("form", ["task", "stack", "vmap"])
def test_pure_gradient_is_the_autograd_gradient(algorithm, form):
    """Eager torch.func against eager autograd: the per-task step, and the grouped and vmapped means."""
    tasks = tasks_of(torch.float64)
    algo = build_algorithm(tiny_conv(torch.float64), config(algorithm))
    if form == "task":
        expected = task_gradient(algo, tasks[0])
    else:
        expected = batched.stack_gradient(algo, tasks)
    grads, loss, acc = pure_gradient(algo, tasks, form)
    assert max(g.abs().max().item() for g in expected.grads) > 1e-3, "degenerate test: the gradient is ~0"
    assert max_abs(grads, expected.grads) <= 1e-10
    assert loss.item() == pytest.approx(expected.loss, abs=1e-10)
    assert acc.item() == pytest.approx(expected.accuracy, abs=1e-6)


def test_pure_gradient_regression_has_no_accuracy():
    torch.manual_seed(0)
    from metacompare.models import mlp
    from tests.conftest import make_sine_task

    algo = build_algorithm(mlp().double(), RunConfig(algorithm="maml", inner_lr=0.01, inner_steps=2))
    task = make_sine_task(seed=1)
    expected = task_gradient(algo, task)
    grads, loss, acc = pure_gradient(algo, [task], "task")
    assert acc is None and expected.accuracy is None
    assert max_abs(grads, expected.grads) <= 1e-10
    assert loss.item() == pytest.approx(expected.loss, abs=1e-12)


def test_compiled_regression_step_matches_eager():
    """One real compilation in the default suite: Reptile on the sine MLP, whose graph is small
    (17 s with a cold Inductor cache on the loaded 2-core machine, ~2 s warm)."""
    from metacompare.models import mlp
    from tests.conftest import make_sine_task

    def run(compile):
        torch.manual_seed(0)
        model = mlp().double()
        cfg = RunConfig(algorithm="reptile", inner_lr=0.01, inner_steps=2, outer_optimizer="sgd", compile=compile)
        metrics = build_algorithm(model, cfg).meta_train_step([make_sine_task(seed=i) for i in range(4)])
        return [p.grad.clone() for p in model.parameters()], metrics

    (expected, metrics), (got, got_metrics) = run(False), run(True)
    assert max(g.abs().max().item() for g in expected) > 1e-3
    assert max_abs(got, expected) <= 1e-10
    assert got_metrics == pytest.approx(metrics, abs=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "reptile"])
@pytest.mark.parametrize("engine", [{}, {"batch_tasks": True}, {"vmap": True}], ids=["looped", "batched", "vmap"])
def test_compiled_step_matches_eager(algorithm, engine):
    """``meta_train_step`` with ``compile: true`` against without, float64, same θ and tasks."""
    expected, metrics = ours(algorithm, torch.float64, **engine)
    got, got_metrics = ours(algorithm, torch.float64, compile=True, **engine)
    assert max_abs(got, expected) <= 1e-10
    assert got_metrics["loss"] == pytest.approx(metrics["loss"], abs=1e-10)
    assert got_metrics["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6)


@pytest.mark.slow
def test_compiled_reptile_with_inner_adam_matches_eager():
    """Adam's moments and step count are traced through too (measured 2e-11: sqrt and division order)."""
    expected, _ = ours("reptile", torch.float64, inner_optimizer="adam", inner_lr=0.01)
    got, _ = ours("reptile", torch.float64, inner_optimizer="adam", inner_lr=0.01, compile=True)
    assert max_abs(got, expected) <= 1e-10


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["fomaml", "reptile"])
def test_compiled_bfloat16_is_a_bfloat16_step(algorithm):
    """Under bf16 autocast the compiled step is as good a bf16 step as the eager one: it points the way
    tests/test_fast_paths.py requires of eager bf16, and it is no further from float32 than bf16 rounding.

    It need not round as eager does: how closely it does depends on the host's Inductor code. On an
    AVX-512 host the two agreed to 3e-8 / 7e-6 norm-wise; on an AVX2-only host they differ by 2-8%
    (FOMAML 8.4%, Reptile 2.1%; Inductor's ``emulate_precision_casts`` does not close the gap, 9.8%),
    while each stays 10-15% from float32 (compiled 10.1% / 14.6%, eager 12.0% / 14.2%, cosine ≥ 0.989).
    """
    expected = flat(reference(algorithm, torch.float32, strided=True))
    changes = dict(strided=True, model="conv4_strided", precision="bfloat16")
    eager, got = flat(ours(algorithm, torch.float32, **changes)[0]), flat(ours(algorithm, torch.float32,
                                                                               compile=True, **changes)[0])
    assert torch.isfinite(got).all() and not torch.equal(got, expected), "bf16 should round differently"
    assert F.cosine_similarity(got, expected, dim=0) >= 0.98
    assert (got - expected).norm() <= 0.2 * expected.norm()
    # Not worse than eager bf16 beyond rounding noise: within 1.5x of eager's own distance from float32.
    assert (got - expected).norm() <= 1.5 * (eager - expected).norm()
    assert (got - eager).norm() <= 0.2 * eager.norm()


def test_compile_is_validated():
    base = RunConfig(dataset="omniglot", model="conv4", ways=5, shots=1, query=5, algorithm="maml")
    assert with_overrides(base, compile=True).compile
    assert with_overrides(base, compile=True, batch_tasks=True, precision="float64").compile
    assert with_overrides(base, compile=True, precision="bfloat16", inner_optimizer="adam").compile
    refused = [({"algorithm": "anil"}, "anil has no compiled step"),
               ({"backend": "learn2learn"}, "backend: metacompare"),
               ({"inner_batch_size": 2}, "inner_batch_size: 0"),
               ({"algorithm": "reptile", "inner_optimizer": "adam", "inner_state": "carry"}, "inner_state: reset")]
    for changes, message in refused:
        with pytest.raises(ConfigError, match=f"^compile: .*{message}"):
            with_overrides(base, compile=True, **changes)
        with_overrides(base, compile=False, **changes)  # the same config runs uncompiled


def test_compile_without_a_cxx_compiler_is_refused(monkeypatch):
    monkeypatch.setattr(compiled, "cxx_compiler", lambda: None)
    base = RunConfig(algorithm="fomaml")
    with pytest.raises(ConfigError, match="C\\+\\+ compiler"):
        with_overrides(base, compile=True)
    assert not with_overrides(base, compile=False).compile


def test_compile_leaves_existing_run_ids_alone():
    """Runs recorded before the option existed keep their ids; a compiled run is a run of its own."""
    plain = RunConfig()
    assert "compile" not in plain.identity()
    assert RunConfig(compile=True).identity()["compile"] is True
    assert RunConfig(compile=True).run_id() != plain.run_id()


def test_compiled_step_runs_eagerly_under_a_dispatch_mode():
    """The bench counts FLOPs under FlopCounterMode, where Dynamo compiles nothing: the same pure function
    then runs uncompiled (and nothing is compiled, so this is fast)."""
    from torch.utils.flop_counter import FlopCounterMode

    expected, _ = ours("fomaml", torch.float64)
    with FlopCounterMode(display=False) as counter:
        got, _ = ours("fomaml", torch.float64, compile=True)
    assert counter.get_total_flops() > 0
    assert max_abs(got, expected) <= 1e-10


@pytest.mark.parametrize("algorithm", ["maml", "fomaml"])
def test_pure_gradient_leaves_finn_offsets_to_the_outer_loop(algorithm):
    """Finn et al.'s BatchNorm offsets are not adapted (``inner_loop_frozen``) but still get a meta-gradient."""
    from metacompare.models import conv4_finn

    torch.manual_seed(0)
    model = conv4_finn(ways=3, filters=4, image_size=16).double()
    algo = build_algorithm(model, config(algorithm, model="conv4_finn"))
    assert len(algo.adapted) < len(algo.theta())
    task = tasks_of(torch.float64, 1)[0]
    expected = task_gradient(algo, task)
    grads, _, _ = pure_gradient(algo, [task], "task")
    assert max_abs(grads, expected.grads) <= 1e-10
