"""ResNet-12 (metacompare.models.resnet12): its shape, its BatchNorm, DropBlock, and every fast path.

The contract over every registered algorithm runs it too (tests/test_contract.py, kind ``resnet12``:
outer steps, state round trips, evaluation, looped = task-batched engine to 1e-10 in float64, seeded
repeats). Here: the architecture against hand-counted parameters and hand-composed blocks; BatchNorm
with no running statistics (nothing carries between tasks); DropBlock's masks; MAML's meta-gradient
against learn2learn's; channels_last and bfloat16 against float32; two processes against one.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from metacompare.engines import distributed

from metacompare.models import grouped, precision
from metacompare.algorithms import build_algorithm
from metacompare.workflows.bench_worker import IMPLEMENTATIONS, Setting, resnet12_widths, step_function
from metacompare.workflows.catalogue import catalogue
from metacompare.config.loading import ConfigError, RunConfig, with_overrides
from metacompare.data import Task
from metacompare.models import build_model
from metacompare.models.resnet12 import DropBlock, ResidualBlock, drop_block, resnet12
from metacompare.config.runconfig import ResNet12Config
from tests.conftest import make_task
from tests.faults import one_torch_thread

one_thread = pytest.fixture(autouse=True)(one_torch_thread)

TINY = (3, 4, 3, 5)  # widths small enough for float64 gradients in milliseconds


def block_parameters(cin: int, cout: int) -> int:
    """Three 3x3 convs (no bias), a 1x1 shortcut conv, four BatchNorms (scale and offset each)."""
    return 9 * cin * cout + 2 * 9 * cout * cout + cin * cout + 4 * 2 * cout


def expected_parameters(channels: int, widths: tuple[int, ...], ways: int) -> int:
    ins = (channels, *widths[:-1])
    return sum(block_parameters(a, b) for a, b in zip(ins, widths)) + widths[-1] * ways + ways


@pytest.mark.parametrize("channels,size,widths,side", [(3, 84, (64, 160, 320, 640), 5), (1, 28, (64, 128, 256, 512), 1)])
def test_shape_and_parameter_count(channels, size, widths, side):
    """84 -> 42 -> 21 -> 10 -> 5 and 28 -> 14 -> 7 -> 3 -> 1; MetaOptNet's widths give its 12.4M parameters."""
    model = resnet12(5, channels, widths)
    assert sum(p.numel() for p in model.parameters()) == expected_parameters(channels, widths, 5)
    seen = []
    model[4].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape))
    assert model(torch.rand(2, channels, size, size)).shape == (2, 5)
    assert seen == [(2, widths[-1], side, side)]
    if widths[-1] == 640:
        assert sum(p.numel() for p in model.parameters()) == 12_427_525


def test_a_block_is_the_shortcut_plus_the_body():
    """With the body's last BatchNorm zeroed, a block is maxpool(leaky_relu(BN(conv1x1(x)))), written out."""
    torch.manual_seed(0)
    block = ResidualBlock(2, 3).double()
    x = torch.rand(4, 2, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        block.body[-1].weight.zero_()
        block.body[-1].bias.zero_()
        conv, norm = block.shortcut
        z = F.conv2d(x, conv.weight)
        mean, var = z.mean(dim=(0, 2, 3), keepdim=True), z.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        z = (z - mean) / torch.sqrt(var + norm.eps) * norm.weight[:, None, None] + norm.bias[:, None, None]
        expected = F.max_pool2d(torch.where(z > 0, z, 0.1 * z), 2)
        torch.testing.assert_close(block(x), expected, rtol=0, atol=1e-12)
        block.body[-1].weight.fill_(1.0)
        assert (block(x) - expected).abs().max() > 1e-3  # the body does contribute


def test_batchnorm_keeps_nothing_between_tasks():
    """No running statistics: a task's outputs are the same whatever ran (and was adapted to) before it."""
    cfg = with_overrides(RunConfig(), algorithm="maml", dataset="omniglot", model="resnet12", ways=3, shots=2,
                         query=3, resnet12={"widths": list(TINY)}, omniglot={"image_size": 16}, data_root="x",
                         precision="float64")
    model = build_model(cfg).double()
    assert list(model.buffers()) == []
    a, b = make_task(seed=0), make_task(seed=1)
    first = model(a.query_x)
    model(b.query_x * 5 + 3)
    algorithm = build_algorithm(model, cfg)
    algorithm.evaluate(b, 2)
    assert torch.equal(model(a.query_x), first)


# ------------------------------------------------------------------------------------ DropBlock
def test_drop_block_zeroes_whole_squares_and_keeps_the_sum():
    torch.manual_seed(0)
    x = torch.ones(6, 4, 12, 12, dtype=torch.float64)
    out = drop_block(x, 0.2, 3)
    zero = (out == 0).double()
    assert 0.05 < zero.mean().item() < 0.2  # about the rate (overlapping blocks drop a little less)
    # the zeros are a union of whole 3x3 squares: eroding then dilating them by a 3x3 square gives them back
    eroded = -F.max_pool2d(-zero, 3, stride=1)
    opened = F.max_pool2d(F.pad(eroded, (2,) * 4), 3, stride=1)
    assert torch.equal(opened, zero)
    assert out.sum().item() == pytest.approx(x.numel(), rel=1e-12)  # kept units rescaled: the same total
    kept = out[out != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, x.numel() / kept.numel()), rtol=1e-14, atol=0)


def test_drop_block_rescales_each_stacked_task_on_its_own():
    """``groups`` tasks along the channels (the grouped engine): each task's units keep their own total."""
    torch.manual_seed(1)
    out = drop_block(torch.ones(3, 2 * 5, 8, 8, dtype=torch.float64), 0.3, 2, groups=2)
    per_task = out.reshape(3, 2, 5, 8, 8).sum(dim=(0, 2, 3, 4))
    torch.testing.assert_close(per_task, torch.full((2,), 3 * 5 * 64.0, dtype=torch.float64), rtol=1e-12, atol=0)


def dropblock_config(**changes) -> RunConfig:
    return with_overrides(RunConfig(), **{**dict(algorithm="fomaml", dataset="omniglot", model="resnet12", ways=3,
                                                 shots=2, query=3, data_root="x", omniglot={"image_size": 16},
                                                 resnet12={"widths": list(TINY), "dropblock_rate": 0.3,
                                                           "dropblock_size": 2}, meta_batch_size=2), **changes})


def test_dropblock_acts_in_meta_training_only():
    cfg = dropblock_config()
    model = build_model(cfg)
    drops = [m for m in model.modules() if isinstance(m, DropBlock)]
    assert len(drops) == 2 and not model.training  # after the last two blocks, as MetaOptNet; off when built
    modes = []
    drops[0].register_forward_hook(lambda module, inputs, output: modes.append(
        (module.training, bool((output == 0).any()))))
    algorithm = build_algorithm(model, cfg)
    tasks = [make_task(seed=i, dtype=torch.float32) for i in range(2)]
    algorithm.meta_train_step(tasks)
    assert modes and all(training and dropped for training, dropped in modes)
    assert not model.training  # restored after the step
    modes.clear()
    predict = algorithm.adapt(tasks[0], 2)
    torch.testing.assert_close(predict(tasks[0].query_x), predict(tasks[0].query_x), rtol=0, atol=0)
    assert modes and not any(training for training, _ in modes)


def test_dropblock_is_refused_in_a_data_parallel_run():
    assert distributed.refusal(dropblock_config(), 1) is None
    assert "resnet12.dropblock_rate" in distributed.refusal(dropblock_config(), 2)
    assert distributed.refusal(dropblock_config(resnet12={"widths": list(TINY)}), 2) is None


# --------------------------------------------------------------------------------- correctness
def fixed(dtype=torch.float64, tasks: int = 3) -> list[Task]:
    return [make_task(seed=i, dtype=dtype) for i in range(tasks)]


def tiny(dtype=torch.float64):
    torch.manual_seed(0)
    return resnet12(3, 1, TINY).to(dtype)


@pytest.mark.parametrize("algorithm", ["maml", "fomaml"])
def test_maml_meta_gradient_equals_learn2learns(algorithm):
    """The bench's canonical learn2learn loop on the same θ and tasks, float64, 2 inner steps."""
    s = Setting(model="resnet12", inner_steps=2, inner_lr=0.1, ways=3)
    reference = tiny()
    step_function(IMPLEMENTATIONS[f"learn2learn {algorithm}"], s, reference, fixed())()
    expected = [p.grad for p in reference.parameters()]
    assert max(g.abs().max().item() for g in expected) > 1e-3, "degenerate test: the gradient is ~0"
    for batch_tasks in (False, True):
        cfg = RunConfig(algorithm=algorithm, dataset="omniglot", model="resnet12", ways=3, shots=2, query=3,
                        inner_lr=0.1, inner_steps=2, outer_optimizer="sgd", outer_lr=1e-3, meta_batch_size=3,
                        batch_tasks=batch_tasks, resnet12=ResNet12Config(widths=TINY))
        model = tiny()
        build_algorithm(model, cfg).meta_train_step(fixed())
        for got, want in zip([p.grad for p in model.parameters()], expected):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def grads_of(algorithm: str, dtype=torch.float32, inner_lr: float = 0.01, **changes) -> list[torch.Tensor]:
    cfg = RunConfig(algorithm=algorithm, dataset="omniglot", model="resnet12", ways=3, shots=2, query=3,
                    inner_lr=inner_lr, inner_steps=2, outer_optimizer="sgd", outer_lr=1e-3, meta_batch_size=3,
                    resnet12=ResNet12Config(widths=(4, 6, 8, 10)), **changes)
    torch.manual_seed(0)
    model = precision.prepare_model(resnet12(3, 1, cfg.resnet12.widths).to(dtype), cfg)
    tasks = [precision.prepare_task(t, cfg) for t in fixed(dtype)]
    build_algorithm(model, cfg).meta_train_step(tasks)
    return [p.grad.detach().double().clone() for p in model.parameters()]


def flat(grads):
    return torch.cat([g.reshape(-1) for g in grads])


# bfloat16 autocast's measured agreement with float32 on this net (widths 4-6-8-10, 2 inner steps of 0.01):
# cosine 0.80 (maml), 0.82 (fomaml), 0.965 (reptile), normwise error 61%, 58%, 27%; bounds a little below.
# Far looser than conv4's (tests/test_fast_paths.py: cosine >= 0.98): twelve convolutions, BatchNorms and
# residual sums in 8-bit significands. Even a plain query-loss gradient (no inner loop) of a ResNet-12 at
# widths 8-20-40-80 agreed only to cosine 0.94 (conv4 at 8 filters: 0.998), 0.95 with BatchNorm in float32.
BF16_BOUNDS = {"maml": (0.75, 0.7), "fomaml": (0.75, 0.7), "reptile": (0.93, 0.35)}


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "reptile"])
def test_channels_last_and_bfloat16_stay_close_to_float32(algorithm):
    """channels_last and the task-batched engine: the float32 gradient to 1e-4 of its largest entry.
    bfloat16 autocast: finite, and within the measured bounds of :data:`BF16_BOUNDS` (cosine, normwise)."""
    expected = flat(grads_of(algorithm))
    scale = expected.abs().max().item()
    assert scale > 1e-4, "degenerate test: the gradient is ~0"
    for changes in ({"memory_format": "channels_last"}, {"batch_tasks": True},
                    {"batch_tasks": True, "memory_format": "channels_last"}):
        assert (flat(grads_of(algorithm, **changes)) - expected).abs().max().item() <= 1e-4 * scale, changes
    cosine, error = BF16_BOUNDS[algorithm]
    for changes in ({"precision": "bfloat16"}, {"precision": "bfloat16", "batch_tasks": True,
                                                "memory_format": "channels_last"}):
        got = flat(grads_of(algorithm, **changes))
        assert torch.isfinite(got).all()
        assert F.cosine_similarity(got, expected, dim=0).item() >= cosine, changes
        assert ((got - expected).norm() / expected.norm()).item() <= error, changes


def test_grouped_forward_is_each_tasks_own_forward():
    """The grouped network on a stack equals the model run on each task with its own parameters (float64)."""
    model = tiny()
    tasks = fixed()
    params = {k: torch.stack([v + 0.01 * i for i in range(3)]) for k, v in model.named_parameters()}
    stacked = grouped.grouped_forward(model, params, grouped.stack([t.query_x for t in tasks]))
    for i, task in enumerate(tasks):
        own = torch.func.functional_call(model, {k: v[i] for k, v in params.items()}, (task.query_x,))
        torch.testing.assert_close(stacked[i], own, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------- data parallel
def parallel_step() -> dict:
    """One MAML outer step on 5 fixed tasks, looped and batched: tests/test_distributed.py computes it on
    two processes (split 3 + 2, in its shared spawn) and compares it with one process's."""
    found = {}
    for batch_tasks in (False, True):
        cfg = RunConfig(algorithm="maml", dataset="omniglot", model="resnet12", ways=3, shots=2, query=3,
                        inner_lr=0.1, inner_steps=2, outer_optimizer="sgd", outer_lr=0.1, meta_batch_size=5,
                        precision="float64", batch_tasks=batch_tasks, resnet12=ResNet12Config(widths=TINY))
        model = tiny()
        metrics = build_algorithm(model, cfg).meta_train_step(fixed(tasks=5))
        found[batch_tasks] = ([p.grad.clone() for p in model.parameters()], metrics["loss"])
    return found


# ------------------------------------------------------------------------------------ config
def test_default_section_leaves_run_ids_alone():
    plain = RunConfig(dataset="omniglot", model="conv4")
    assert "resnet12" not in plain.identity()
    narrow = with_overrides(RunConfig(), dataset="omniglot", model="resnet12", data_root="x",
                            resnet12={"widths": [64, 128, 256, 512]})
    assert narrow.identity()["resnet12"]["widths"] == [64, 128, 256, 512]
    assert narrow.run_id() != with_overrides(narrow, resnet12={"widths": [64, 160, 320, 640]}).run_id()


@pytest.mark.parametrize("section,message", [
    ({"widths": [64, 160, 320]}, "resnet12.widths: expected the 4 blocks' channels"),
    ({"widths": [64, 0, 320, 640]}, "resnet12.widths"),
    ({"dropblock_rate": 1.0}, "resnet12.dropblock_rate: must be in [0, 1)"),
    ({"dropblock_rate": -0.1}, "resnet12.dropblock_rate"),
    ({"dropblock_rate": math.nan}, "resnet12.dropblock_rate"),
    ({"dropblock_size": 0}, "resnet12.dropblock_size: must be 1 to 512"),
])
def test_bad_values_are_one_line_errors(section, message):
    with pytest.raises(ConfigError) as caught:
        with_overrides(RunConfig(), dataset="omniglot", model="resnet12", data_root="x", resnet12=section)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_section_is_refused_for_another_model_and_small_images():
    with pytest.raises(ConfigError, match="only model: resnet12 reads this section"):
        with_overrides(RunConfig(), dataset="omniglot", model="conv4", data_root="x", resnet12={"widths": [8] * 4})
    with pytest.raises(ConfigError, match="omniglot.image_size: resnet12 needs at least 16 pixels"):
        with_overrides(RunConfig(), dataset="omniglot", model="resnet12", data_root="x", omniglot={"image_size": 12})


def test_list_shows_resnet12():
    models = dict(catalogue()["models (model:)"])
    assert models["resnet12"].startswith("ResNet-12 (Lee et al. 2019, MetaOptNet)")


def test_bench_widths_keep_metaoptnets_proportions():
    assert resnet12_widths(64) == (64, 160, 320, 640)
    assert resnet12_widths(8) == (8, 20, 40, 80)
