"""metacompare.training.build: the one place a config becomes device, dtype, tasks, network and algorithm."""

from __future__ import annotations

import torch

from metacompare.training.build import build_for, build_network, build_run, placement
from metacompare.config.loading import RunConfig, expand, with_overrides
from metacompare.workflows.lake import load_trained
from metacompare.training.runner import run_dir, train_and_evaluate


def sine(**changes) -> RunConfig:
    return with_overrides(RunConfig(), dataset="sine", model="mlp", ways=1, shots=5, query=5, eval_episodes=2,
                          test_episodes=2, tracker="none", **changes)


def test_placement_stores_bfloat16_runs_in_float32():
    """bfloat16 autocasts the compute; weights and data stay float32 (precision.STORAGE)."""
    assert placement(sine(precision="bfloat16")) == (torch.device("cpu"), torch.float32)
    assert placement(sine(precision="float64")) == (torch.device("cpu"), torch.float64)
    assert next(build_network(sine(precision="float64")).parameters()).dtype == torch.float64


def test_build_run_is_seeded_and_gives_the_algorithm_its_network():
    first, second = build_run(sine(seed=3)), build_run(sine(seed=3))
    assert first.algorithm.model is first.model and first.dtype == torch.float32
    for a, b in zip(first.model.parameters(), second.model.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(first.tasks.test[0].query_x, second.tasks.test[0].query_x)
    other = build_run(sine(seed=4))
    assert not torch.equal(next(first.model.parameters()), next(other.model.parameters()))


def conv(**changes) -> RunConfig:
    return expand(dict(dataset="omniglot", model="conv4", ways=3, shots=1, query=1, filters=4,
                       omniglot={"image_size": 16}, tracker="none", **changes))[0]


def test_the_memory_layout_is_applied_to_the_network_an_algorithm_gets():
    algorithm = build_for(build_network(conv(memory_format="channels_last")), conv(memory_format="channels_last"))
    assert algorithm.model[1][0].weight.is_contiguous(memory_format=torch.channels_last)  # 4 input channels
    plain = build_for(build_network(conv()), conv())
    assert not plain.model[1][0].weight.is_contiguous(memory_format=torch.channels_last)


def test_evaluate_rebuilds_the_network_a_run_trained(tmp_path):
    """`metacompare evaluate` (lake.load_trained) builds through the same functions as `run`: the saved
    weights load bitwise into the same layout."""
    cfg = sine(algorithm="fomaml", iterations=2, eval_interval=2, meta_batch_size=2, results_dir=str(tmp_path))
    train_and_evaluate(cfg, progress=False)
    algorithm, loaded = load_trained(run_dir(cfg))
    assert loaded.identity() == cfg.identity()
    saved = torch.load(run_dir(cfg) / "model.pt", weights_only=True)["algorithm"]["model"]
    for name, tensor in algorithm.model.state_dict().items():
        assert torch.equal(tensor, saved[name])
