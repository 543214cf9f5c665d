"""learn2learn task datasets: shapes, seeded task sets, alphabet-disjoint Omniglot splits."""

from __future__ import annotations

import math

import torch

from metacompare.config.loading import OmniglotConfig, RunConfig
from metacompare.data import SineWaves, TaskSampler, build_tasks, omniglot_splits


def test_sine_points_follow_their_function():
    data = SineWaves(functions=5, points=20, seed=0)
    for index in (0, 37, 99):
        x, y = data[index]
        f = index // 20
        assert -5 <= x.item() <= 5
        expected = data.amplitude[f] * math.sin(x.item() - data.phase[f])
        assert abs(y.item() - expected) < 1e-5
    assert all(0.1 <= a <= 5.0 for a in data.amplitude) and all(0 <= p <= math.pi for p in data.phase)


def test_sine_tasks_have_k_support_points_from_one_function():
    cfg = RunConfig(dataset="sine", shots=5, query=7)
    task = TaskSampler(SineWaves(50, 20, seed=0), cfg, -1, seed=0, split="train").sample()
    assert task.support_x.shape == (5, 1) and task.query_x.shape == (7, 1)
    # one function: all 12 points lie on a single sine (same amplitude/phase) of the family
    xs, ys = task.all_x.squeeze(1), task.all_y.squeeze(1)
    data = SineWaves(50, 20, seed=0)
    fits = [f for f in range(50) if torch.allclose(data.amplitude[f] * torch.sin(xs - data.phase[f]), ys, atol=1e-5)]
    assert len(fits) == 1


def test_finite_task_count_limits_distinct_training_tasks():
    cfg = RunConfig(dataset="sine", shots=3, query=3, num_tasks=4)
    sampler = TaskSampler(SineWaves(100, 20, seed=0), cfg, 4, seed=0, split="train")
    seen = {tuple(sampler.sample().all_x.flatten().tolist()) for _ in range(60)}
    assert len(seen) == 4


def test_same_seed_same_tasks_other_seed_other_tasks():
    cfg = RunConfig(dataset="sine", shots=3, query=3)
    def first(seed):
        return TaskSampler(SineWaves(100, 20, seed=0), cfg, -1, seed=seed, split="train").sample().all_x
    assert torch.equal(first(1), first(1)) and not torch.equal(first(1), first(2))


def test_evaluation_episodes_do_not_depend_on_the_training_seed():
    a = build_tasks(RunConfig(dataset="sine", seed=0, eval_episodes=3, test_episodes=3))
    b = build_tasks(RunConfig(dataset="sine", seed=5, eval_episodes=3, test_episodes=3))
    assert all(torch.equal(x.query_x, y.query_x) for x, y in zip(a.test, b.test))


def minimal_config(root, **changes) -> RunConfig:
    omniglot = OmniglotConfig(sources=("images_background_small1", "images_background_small2"),
                              train_alphabets=("Balinese", "Greek", "Korean", "Latin"),
                              validation_alphabets=("Early_Aramaic",),
                              test_alphabets=("Japanese_(katakana)", "Sanskrit", "Tagalog"), download=False)
    return RunConfig(**{"dataset": "omniglot", "model": "conv4", "ways": 5, "shots": 1, "query": 2,
                        "data_root": str(root), "omniglot": omniglot, **changes})


def test_omniglot_minimal_splits_are_alphabet_disjoint_and_rotated(omniglot_root):
    splits = omniglot_splits(minimal_config(omniglot_root))
    # 136 + 156 characters, 50 of them (Greek, Latin) in both zips: 242 distinct, each x4 rotations.
    assert sum(len(s.labels_to_indices) for s in splits.values()) == 4 * 242
    assert len(splits["test"].labels_to_indices) == 4 * 106  # katakana 47 + Sanskrit 42 + Tagalog 17
    images = splits["train"].images
    assert images.shape[1:] == (1, 28, 28) and 0.0 <= images.min() and images.max() <= 1.0
    # class 4c+k is class 4c turned k quarter turns
    first = splits["train"].labels_to_indices
    assert torch.equal(images[first[1][0]], torch.rot90(images[first[0][0]], 1, dims=(1, 2)))


def test_omniglot_tasks_are_n_way_k_shot(omniglot_root):
    tasks = build_tasks(minimal_config(omniglot_root, eval_episodes=2, test_episodes=2))
    task = tasks.train.sample()
    assert task.support_x.shape == (5, 1, 28, 28) and task.query_x.shape == (10, 1, 28, 28)
    assert sorted(task.support_y.tolist()) == [0, 1, 2, 3, 4]
    assert torch.bincount(task.query_y).tolist() == [2] * 5
    assert len(set(task.classes.tolist())) == 5


def test_rotations_can_be_turned_off(omniglot_root):
    cfg = minimal_config(omniglot_root)
    cfg = minimal_config(omniglot_root, omniglot=type(cfg.omniglot)(**{**cfg.omniglot.__dict__, "rotations": False}))
    assert len(omniglot_splits(cfg)["test"].labels_to_indices) == 106
