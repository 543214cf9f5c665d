"""MAML++'s options (Antoniou, Edwards & Storkey 2019), checked against hand-derived values in float64.

The tiny model is f(x) = w·x (one weight, no bias) on the squared error, so every quantity has a closed
form: the support gradient g(w) = 2·xs·(w·xs − ys), one SGD step's Jacobian c = 1 − 2·α·xs², the query
loss's derivative q(w) = 2·xq·(w·xq − yq).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from metacompare.algorithms import ALGORITHMS, build_algorithm
from metacompare.algorithms import maml_plus
from metacompare.algorithms.base import cosine_rate
from metacompare.config.loading import ConfigError, MamlPlusPlusConfig, RunConfig, expand, with_overrides
from metacompare.data import Task
from metacompare.engines.looped import task_gradient
from tests.conftest import make_task
from tests.faults import one_torch_thread

one_thread = pytest.fixture(autouse=True)(one_torch_thread)

W0, XS, YS, XQ, YQ, ALPHA = 0.5, 1.5, 2.0, -1.0, 0.5, 0.1


def g(w: float) -> float:
    return 2 * XS * (w * XS - YS)


def q(w: float) -> float:
    return 2 * XQ * (w * XQ - YQ)


def linear_run(algorithm: str = "maml", steps: int = 2, **options) -> tuple:
    """The algorithm around f(x) = w·x, and its one task."""
    model = nn.Sequential(nn.Linear(1, 1, bias=False)).double()
    with torch.no_grad():
        model[0].weight.fill_(W0)
    cfg = RunConfig(dataset="sine", model="mlp", algorithm=algorithm, inner_lr=ALPHA, inner_steps=steps,
                    mamlpp=MamlPlusPlusConfig(**options), precision="float64")
    task = Task(*(torch.tensor([[v]], dtype=torch.float64) for v in (XS, YS, XQ, YQ)))
    return build_algorithm(model, cfg), task


# ------------------------------------------------------------------------------------- MSL
def test_msl_weights_follow_the_papers_schedule():
    # the paper's code at epoch e of multi_step_loss_num_epochs = 10, N = 5 steps: decay 1/N/10 per epoch,
    # floor 0.03/N = 0.006, cap 1 - 4·0.006 = 0.976; e = 5 is progress 0.05 of training with msl_fraction 0.1
    assert maml_plus.msl_weights(5, 0.0, 0.1) == pytest.approx([0.2] * 5, abs=1e-15)
    assert maml_plus.msl_weights(5, 0.05, 0.1) == pytest.approx([0.1] * 4 + [0.6], abs=1e-15)
    assert maml_plus.msl_weights(5, 0.099, 0.1) == pytest.approx([0.006] * 4 + [0.976], abs=1e-15)
    assert maml_plus.msl_weights(5, 0.1, 0.1) is None  # over: the last step's loss alone
    assert maml_plus.msl_weights(2, 0.05, 0.1) == pytest.approx([0.25, 0.75], abs=1e-15)


@pytest.mark.parametrize("progress", [0.05, 0.5])
def test_msl_meta_gradient_of_two_steps_by_hand(progress):
    algo, task = linear_run(multi_step_loss=True)
    algo.progress = progress
    w1 = W0 - ALPHA * g(W0)
    w2 = w1 - ALPHA * g(w1)
    c = 1 - 2 * ALPHA * XS ** 2
    # 0.05: weights (0.25, 0.75) on the query losses after steps 1 and 2; 0.5: MSL is over
    expected = 0.25 * q(w1) * c + 0.75 * q(w2) * c ** 2 if progress < 0.1 else q(w2) * c ** 2
    grad = task_gradient(algo, task).grads[0].item()
    assert grad == pytest.approx(expected, rel=1e-12)


def test_first_order_msl_takes_each_steps_gradient_at_its_weights():
    algo, task = linear_run("fomaml", multi_step_loss=True)
    algo.progress = 0.05
    w1 = W0 - ALPHA * g(W0)
    w2 = w1 - ALPHA * g(w1)
    assert task_gradient(algo, task).grads[0].item() == pytest.approx(0.25 * q(w1) + 0.75 * q(w2), rel=1e-12)


# ------------------------------------------------------------------------------------ LSLR
@pytest.mark.parametrize("algorithm", ["maml", "fomaml"])
def test_lslr_gradient_with_respect_to_the_per_step_rates(algorithm):
    algo, task = linear_run(algorithm, learned_inner_lr=True)
    a0, a1 = 0.1, 0.05
    with torch.no_grad():
        algo.per_step.rates["0.weight"].copy_(torch.tensor([a0, a1], dtype=torch.float64))
    w1 = W0 - a0 * g(W0)
    w2 = w1 - a1 * g(w1)
    c1 = 1 - 2 * a1 * XS ** 2 if algorithm == "maml" else 1.0  # ∂w2/∂w1; first order: the identity
    c0 = 1 - 2 * a0 * XS ** 2 if algorithm == "maml" else 1.0
    grads = task_gradient(algo, task).grads
    assert len(grads) == 2 and grads[1].shape == (2,)  # θ, then the rates
    assert grads[0].item() == pytest.approx(q(w2) * c1 * c0, rel=1e-12)
    assert grads[1][1].item() == pytest.approx(-q(w2) * g(w1), rel=1e-12)
    assert grads[1][0].item() == pytest.approx(-q(w2) * c1 * g(W0), rel=1e-12)


def test_lslr_rates_are_learned_by_the_outer_optimiser_and_saved():
    algo, task = linear_run(learned_inner_lr=True)
    before = algo.per_step.rates["0.weight"].detach().clone()
    algo.meta_train_step([task])
    after = algo.per_step.rates["0.weight"].detach().clone()
    assert (after != before).all()
    other, _ = linear_run(learned_inner_lr=True)
    other.load_state_dict(algo.state_dict())
    assert torch.equal(other.per_step.rates["0.weight"], after)


# ------------------------------------------------------------------------------------- DA
def test_derivative_order_annealing_switches_create_graph_at_the_right_iteration(monkeypatch):
    algo, task = linear_run(first_order_fraction=0.5)
    seen: list[bool] = []
    real = torch.autograd.grad

    def spy(*args, **kwargs):
        if "create_graph" in kwargs:  # the inner loop's step gradients
            seen.append(kwargs["create_graph"])
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", spy)
    per_iteration = []
    for iteration in range(4):  # the runner's schedule: fraction done = iteration / iterations
        algo.set_outer_lr(iteration / 4)
        seen.clear()
        algo.meta_train_step([task])
        per_iteration.append(list(seen))
    assert per_iteration == [[False, False], [False, False], [True, True], [True, True]]


def test_first_order_phase_of_da_is_fomamls_gradient():
    algo, task = linear_run(first_order_fraction=0.5)
    w1 = W0 - ALPHA * g(W0)
    w2 = w1 - ALPHA * g(w1)
    c = 1 - 2 * ALPHA * XS ** 2
    algo.progress = 0.25
    assert task_gradient(algo, task).grads[0].item() == pytest.approx(q(w2), rel=1e-12)
    algo.progress = 0.5
    assert task_gradient(algo, task).grads[0].item() == pytest.approx(q(w2) * c ** 2, rel=1e-12)


# ------------------------------------------------------------------------------------- CA
def test_cosine_rate_matches_torch_cosine_annealing():
    assert cosine_rate(1e-3, 1e-5, 0.0) == pytest.approx(1e-3, rel=1e-15)
    assert cosine_rate(1e-3, 1e-5, 0.5) == pytest.approx(5.05e-4, rel=1e-12)
    assert cosine_rate(1e-3, 1e-5, 1.0) == pytest.approx(1e-5, rel=1e-12)
    # the paper's schedule: CosineAnnealingLR(T_max=100 epochs, eta_min=1e-5), stepped once per epoch
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.Adam([param], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=100, eta_min=1e-5)
    for epoch in range(1, 101):
        optimizer.step()
        scheduler.step()
        assert optimizer.param_groups[0]["lr"] == pytest.approx(cosine_rate(1e-3, 1e-5, epoch / 100), rel=1e-9)


def test_outer_lr_schedule_cosine_sets_the_outer_step_at_given_iterations():
    model = nn.Sequential(nn.Linear(1, 1)).double()
    cfg = with_overrides(RunConfig(), outer_lr=1e-3, outer_lr_schedule="cosine", outer_lr_final=1e-5, iterations=8)
    algo = build_algorithm(model, cfg)
    rates = []
    for iteration in (0, 2, 4, 6, 8):
        algo.set_outer_lr(iteration / 8)
        rates.append(algo.outer_optimizer.param_groups[0]["lr"])
    half = (1e-3 - 1e-5) / 2
    expected = [1e-3, 1e-5 + half * (1 + math.sqrt(0.5)), 5.05e-4, 1e-5 + half * (1 - math.sqrt(0.5)), 1e-5]
    assert rates == pytest.approx(expected, rel=1e-12)
    linear = build_algorithm(model, with_overrides(RunConfig(), outer_lr=1e-3, outer_lr_final=0.0))
    linear.set_outer_lr(0.25)
    assert linear.outer_optimizer.param_groups[0]["lr"] == pytest.approx(7.5e-4, rel=1e-12)  # unchanged


# ------------------------------------------------------------------------------ per-step BN
def bn_run(steps: int = 2, **options):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2, track_running_stats=False), nn.ReLU(),
                          nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).double()
    cfg = RunConfig(dataset="omniglot", model="conv4", ways=3, shots=2, query=3, inner_lr=0.1, inner_steps=steps,
                    mamlpp=MamlPlusPlusConfig(**options), precision="float64")
    algo = build_algorithm(model, cfg)
    return algo, make_task(size=4)


def record_norm(algo) -> list[tuple]:
    """(scale used, index of the statistics row used or None, training flag) for every BatchNorm call."""
    calls = []
    steps = algo.per_step.steps
    rows = algo.per_step.norm_stats.get("1.running_mean")

    def hook(module, inputs):
        row = None
        if module.running_mean is not None:
            row = next(k for k in range(steps) if module.running_mean.data_ptr() == rows[k].data_ptr())
        calls.append((module.weight[0].item(), row, module.training))
    algo.model[1].register_forward_pre_hook(hook)
    return calls


def test_per_step_bn_uses_step_k_weights_and_statistics_at_step_k():
    algo, task = bn_run(per_step_bn_weights=True, per_step_bn_statistics=True)
    with torch.no_grad():
        algo.per_step.norm_params["1.weight"].copy_(torch.tensor([[1.0, 1.0], [2.0, 2.0]]))
    calls = record_norm(algo)
    conv = nn.functional.conv2d(task.support_x, algo.model[0].weight, algo.model[0].bias, padding=1)
    task_gradient(algo, task)
    # support at step 0 and 1, the query after step 2 (index 1), then the logged fit (last weights, batch stats)
    assert calls == [(1.0, 0, True), (2.0, 1, True), (2.0, 1, True), (2.0, None, True)]
    mean, var = conv.mean(dim=(0, 2, 3)), conv.var(dim=(0, 2, 3), unbiased=True)  # momentum 0.1 from (0, 1)
    assert torch.allclose(algo.per_step.norm_stats["1.running_mean"][0], 0.1 * mean, rtol=1e-12, atol=1e-15)
    assert torch.allclose(algo.per_step.norm_stats["1.running_var"][0], 0.9 + 0.1 * var, rtol=1e-12, atol=1e-15)
    calls.clear()
    stats = {k: v.clone() for k, v in algo.per_step.norm_stats.items()}
    predict = algo.adapt(task, steps=3)  # longer than training: the last entry repeats
    with torch.no_grad():
        predict(task.query_x)
    assert calls == [(1.0, 0, False), (2.0, 1, False), (2.0, 1, False), (2.0, 1, False)]
    assert all(torch.equal(stats[k], v) for k, v in algo.per_step.norm_stats.items())  # evaluation updates nothing
    assert algo.model[1].training  # and leaves the layer as it was


def test_per_step_bn_weights_are_meta_parameters_in_place_of_the_layers_own():
    algo, task = bn_run(per_step_bn_weights=True)
    names = set(algo.theta())
    assert "1.weight" not in names and "1.bias" not in names and "1.weight" not in algo.adapted
    grads = task_gradient(algo, task).grads
    assert [g.shape for g in grads[-2:]] == [(2, 2), (2, 2)]  # per step × channel
    assert grads[-1].abs().max() > 1e-6


@pytest.mark.parametrize("options", [dict(per_step_bn_weights=True, multi_step_loss=True, learned_inner_lr=True),
                                     dict(per_step_bn_weights=True, first_order_fraction=1.0, learned_inner_lr=True)])
def test_batched_engine_equals_the_looped_one_with_per_step_bn(options):
    algo, _ = bn_run(**options)
    algo.progress = 0.05
    tasks = [make_task(size=4, seed=s) for s in range(3)]
    from metacompare.engines.batched import stack_gradient
    from metacompare.engines.looped import looped_gradient
    looped = looped_gradient(algo, tasks)
    batched = stack_gradient(algo, tasks)
    assert batched is not None
    worst = max((a - b).abs().max().item() for a, b in zip(looped.grads, batched.grads))
    assert worst < 1e-10 and max(g.abs().max().item() for g in looped.grads) > 1e-4


def test_running_statistics_fall_back_to_the_looped_engine():
    algo, _ = bn_run(per_step_bn_statistics=True)
    from metacompare.engines.batched import stack_gradient
    assert stack_gradient(algo, [make_task(size=4, seed=s) for s in range(2)]) is None


# ---------------------------------------------------------------------------- the preset
def test_maml_plus_plus_is_registered_with_the_papers_values():
    cls = ALGORITHMS["maml++"]
    assert cls.mamlpp_preset == MamlPlusPlusConfig(multi_step_loss=True, msl_fraction=0.1, per_step_bn_weights=True,
                                                   per_step_bn_statistics=False, learned_inner_lr=True,
                                                   first_order_fraction=0.5)
    algo, _ = bn_run()  # maml with an empty section: every option off
    assert algo.per_step is None
    model = nn.Sequential(nn.Linear(1, 1)).double()
    plus = build_algorithm(model, with_overrides(RunConfig(), algorithm="maml++", inner_steps=5))
    assert plus.options == cls.mamlpp_preset and set(plus.per_step.rates) == {"0.weight", "0.bias"}
    assert plus.per_step.rates["0.weight"].tolist() == [0.01] * 5  # one rate per step, from inner_lr


def test_an_experiment_file_gives_maml_plus_plus_its_cosine_schedule():
    both = expand({"algorithm": ["maml", "maml++"], "outer_lr": 0.001})
    assert [(c.outer_lr_schedule, c.outer_lr_final) for c in both] == [("linear", None), ("cosine", 1e-5)]
    mine = expand({"algorithm": "maml++", "outer_lr_schedule": "linear"})[0]
    assert (mine.outer_lr_schedule, mine.outer_lr_final) == ("linear", 1e-5)


def test_run_ids_of_configs_without_the_new_fields_are_unchanged():
    identity = RunConfig().identity()
    assert "mamlpp" not in identity and "outer_lr_schedule" not in identity
    assert with_overrides(RunConfig(), mamlpp={"multi_step_loss": True}).run_id() != RunConfig().run_id()
    assert with_overrides(RunConfig(), outer_lr_schedule="cosine").run_id() != RunConfig().run_id()


# ---------------------------------------------------------------------------- bad values
BAD = [
    (dict(mamlpp={"msl_fraction": 0.0}), "mamlpp.msl_fraction"),
    (dict(mamlpp={"msl_fraction": 1.5}), "mamlpp.msl_fraction"),
    (dict(mamlpp={"first_order_fraction": -0.1}), "mamlpp.first_order_fraction"),
    (dict(mamlpp={"first_order_fraction": 2}), "mamlpp.first_order_fraction"),
    (dict(algorithm="fomaml", mamlpp={"first_order_fraction": 0.5}), "mamlpp.first_order_fraction"),
    (dict(mamlpp={"multi_step_loss": "yes"}), "mamlpp.multi_step_loss"),
    (dict(mamlpp={"learned_inner_lr": True}, inner_optimizer="adam"), "mamlpp.learned_inner_lr"),
    (dict(mamlpp={"multi_step_loss": True}, backend="learn2learn"), "mamlpp.multi_step_loss"),
    (dict(mamlpp={"per_step_bn_weights": True}), "mamlpp.per_step_bn_weights"),  # mlp: no BatchNorm2d
    (dict(mamlpp={"learned_inner_lr": True}, compile=True), "mamlpp.learned_inner_lr"),
    (dict(mamlpp={"colour": 1}), "mamlpp.colour"),
    (dict(algorithm="reptile", mamlpp={"multi_step_loss": True}), "mamlpp: reptile"),
    (dict(algorithm="anil", mamlpp={}), "mamlpp: anil"),
    (dict(outer_lr_schedule="cos"), "outer_lr_schedule"),
    (dict(algorithm="maml++", backend="higher"), "backend"),
]


@pytest.mark.parametrize("changes,field", BAD, ids=[f for _, f in BAD])
def test_each_option_refuses_a_bad_value_in_one_line(changes, field):
    with pytest.raises(ConfigError) as err:
        expand({"dataset": "sine", **changes})
    message = str(err.value)
    assert field in message and "\n" not in message


def test_derivative_order_annealing_runs_on_the_other_backends():
    cfg = expand({"algorithm": "maml", "backend": "learn2learn", "mamlpp": {"first_order_fraction": 0.5}})[0]
    assert cfg.mamlpp.first_order_fraction == 0.5


# ---------------------------------------------------------------------------- the paper config
def test_the_paper_config_has_mamlpps_protocol_and_published_number():
    from pathlib import Path

    from metacompare.config.loading import load_experiment, reported_accuracy
    from metacompare.report.published import PUBLISHED_ACCURACY

    path = Path(__file__).resolve().parents[1] / "configs" / "papers" / "mamlpp_omniglot_5way_1shot.yaml"
    maml, plus = load_experiment(path)
    assert (maml.algorithm, plus.algorithm) == ("maml", "maml++")
    assert (plus.model, plus.filters, plus.inner_steps, plus.eval_inner_steps, plus.inner_lr) == ("conv4", 64, 5, 5, 0.1)
    assert (plus.meta_batch_size, plus.iterations, plus.query, plus.test_episodes) == (8, 50000, 1, 600)
    assert (plus.outer_optimizer, plus.outer_lr, plus.outer_lr_schedule, plus.outer_lr_final) == ("adam", 0.001, "cosine", 1e-5)
    assert plus.mamlpp == ALGORITHMS["maml++"].mamlpp_preset
    assert (maml.model, maml.inner_lr, maml.inner_steps, maml.meta_batch_size) == ("conv4_finn", 0.4, 1, 32)
    assert reported_accuracy(path) == {"maml": 98.7, "maml++": 99.47}
    assert "99.47" in path.read_text().split("# reported_accuracy:")[0]  # cited in the prose too
    assert PUBLISHED_ACCURACY[("omniglot", 5, 1)]["maml++"] == (99.47, "Antoniou et al. 2019, Table 1")
