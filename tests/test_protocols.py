"""Our algorithms equal the authors' code, re-implemented here from their repositories.

- supervised-reptile (Nichol et al. 2018): ``reptile.py`` ``train_step``: each task trained from the
  old variables on one pass of shuffled mini-batches (``_mini_batches(..., replacement=False)``) with
  TensorFlow's Adam (beta1 = 0), whose slots are *not* reset between tasks; the new variables of the
  meta-batch averaged and interpolated with a meta-step annealed linearly to ``meta_step_final``.
- cbfinn/maml (Finn et al. 2017): the per-example cross-entropy divided by K (``xent``), summed by
  ``tf.gradients``, one SGD step of α, then the query loss's gradient through it.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metacompare.algorithms import build_algorithm
from metacompare.config.loading import OmniglotConfig, RunConfig, load_experiment
from metacompare.data import build_tasks, omniglot_splits
from metacompare.engines.looped import task_gradient
from tests.conftest import make_task


def tiny_net() -> nn.Sequential:
    """No conv bias: before batch-statistics BatchNorm its gradient is exactly zero in exact arithmetic,
    so what a float computes for it is rounding noise, which Adam (dividing by √v) blows up to full
    steps of different sign in any two implementations."""
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(3, track_running_stats=False),
                         nn.ReLU(), nn.Flatten(), nn.Linear(3 * 8 * 8, 3)).double()


def tf_adam_step(params, grads, slots, lr, beta1, beta2, eps=1e-8):
    """tf.train.AdamOptimizer.apply_gradients, written out (its slots: m, v and the step count)."""
    slots["t"] += 1
    t = slots["t"]
    rate = lr * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
    with torch.no_grad():
        for i, (p, g) in enumerate(zip(params, grads)):
            slots["m"][i] = beta1 * slots["m"][i] + (1 - beta1) * g
            slots["v"][i] = beta2 * slots["v"][i] + (1 - beta2) * g * g
            p -= rate * slots["m"][i] / (slots["v"][i].sqrt() + eps)


def reptile_mini_batches(size, batch, count):
    """supervised-reptile's _mini_batches without replacement, on torch's global RNG."""
    out, current = [], []
    while True:
        for i in torch.randperm(size).tolist():
            current.append(i)
            if len(current) < batch:
                continue
            out.append(current)
            if len(out) == count:
                return out
            current = []


def supervised_reptile(model, meta_batches, lr, beta1, inner_batch, inner_iters, meta_step, meta_step_final):
    """Nichol et al.'s train loop over ``meta_batches`` (lists of (x, y)), returning the final variables."""
    params = list(model.parameters())
    slots = {"t": 0, "m": [torch.zeros_like(p) for p in params], "v": [torch.zeros_like(p) for p in params]}
    iterations = len(meta_batches)
    for i, tasks in enumerate(meta_batches):
        frac = i / iterations
        step = frac * meta_step_final + (1 - frac) * meta_step
        old = [p.detach().clone() for p in params]
        new = []
        for x, y in tasks:
            for batch in reptile_mini_batches(len(x), inner_batch, inner_iters):
                loss = F.cross_entropy(model(x[batch]), y[batch], reduction="none").sum()  # TF's minimize(vector)
                tf_adam_step(params, torch.autograd.grad(loss, params), slots, lr, beta1, 0.999)
            new.append([p.detach().clone() for p in params])
            with torch.no_grad():
                for p, o in zip(params, old):
                    p.copy_(o)
        with torch.no_grad():
            for j, p in enumerate(params):
                average = sum(n[j] for n in new) / len(new)
                p.copy_(old[j] + step * (average - old[j]))
    return [p.detach().clone() for p in params]


def test_reptile_equals_supervised_reptile():
    """Three iterations of meta-batch 2 on 3-way tasks of 6 images per class: same θ to 1e-10."""
    iterations, meta_batch = 3, 2
    tasks = [[make_task(ways=3, shots=6, query=0, size=16, seed=10 * i + j) for j in range(meta_batch)]
             for i in range(iterations)]
    cfg = RunConfig(algorithm="reptile", dataset="omniglot", model="conv4", ways=3, shots=1, train_shots=6, query=0,
                    inner_optimizer="adam", inner_betas=(0.0, 0.999), inner_state="carry", inner_lr=0.01,
                    inner_steps=4, inner_batch_size=5, inner_loss="sum", meta_batch_size=meta_batch,
                    outer_optimizer="sgd", outer_lr=1.0, outer_lr_final=0.0, iterations=iterations)
    ours = tiny_net()
    algorithm = build_algorithm(ours, cfg)
    torch.manual_seed(7)
    for i, batch in enumerate(tasks):
        algorithm.set_outer_lr(i / iterations)
        algorithm.meta_train_step(batch)
    reference = tiny_net()
    torch.manual_seed(7)
    expected = supervised_reptile(reference, [[(t.all_x, t.all_y) for t in batch] for batch in tasks],
                                  lr=0.01, beta1=0.0, inner_batch=5, inner_iters=4, meta_step=1.0, meta_step_final=0.0)
    moved = max((p - q).abs().max().item() for p, q in zip(ours.parameters(), tiny_net().parameters()))
    assert moved > 1e-3  # the check below is not vacuous
    for p, q in zip(ours.parameters(), expected):
        torch.testing.assert_close(p.detach(), q, rtol=0, atol=1e-10)
    assert algorithm.inner_state.step == iterations * meta_batch * 4  # Adam's step count was carried


def test_carried_adam_state_survives_evaluation_unchanged():
    """Evaluation starts from the carried state and restores it (supervised-reptile's export/import)."""
    cfg = RunConfig(algorithm="reptile", dataset="omniglot", model="conv4", ways=3, shots=2, query=0, train_shots=3,
                    inner_optimizer="adam", inner_betas=(0.0, 0.999), inner_state="carry", inner_lr=0.01,
                    inner_steps=2, outer_optimizer="sgd", outer_lr=1.0)
    algorithm = build_algorithm(tiny_net(), cfg)
    algorithm.meta_train_step([make_task(ways=3, shots=3, query=0, seed=1)])
    before = algorithm.inner_state.to_dict()
    algorithm.evaluate(make_task(ways=3, shots=2, query=2, seed=2), 5)
    after = algorithm.inner_state.to_dict()
    assert before["step"] == after["step"] == 2
    for k in before["v"]:
        assert torch.equal(before["v"][k], after["v"][k])


def finn_maml_gradient(model, task, alpha, shots):
    """cbfinn/maml for one task: θ' = θ − α ∇ Σ_i xent_i / K on the support set; ∇_θ of the query loss."""
    params = list(model.parameters())
    names = [n for n, _ in model.named_parameters()]
    inner = (F.cross_entropy(model(task.support_x), task.support_y, reduction="none") / shots).sum()
    grads = torch.autograd.grad(inner, params, create_graph=True)
    fast = {n: p - alpha * g for n, p, g in zip(names, params, grads)}
    query = F.cross_entropy(torch.func.functional_call(model, fast, (task.query_x,)), task.query_y)
    return torch.autograd.grad(query, params)


def test_maml_with_finns_loss_equals_his_update():
    task = make_task(ways=3, shots=2, query=3, size=16, seed=4)
    cfg = RunConfig(algorithm="maml", dataset="omniglot", model="conv4", ways=3, shots=2, query=3, inner_lr=0.4,
                    inner_steps=1, inner_loss="sum_over_shots")
    ours = task_gradient(build_algorithm(tiny_net(), cfg), task).grads
    expected = finn_maml_gradient(tiny_net(), task, alpha=0.4, shots=2)
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    # and it is the mean-loss MAML at ways × α (3 × 0.4), not at α
    mean_loss = dataclasses.replace(cfg, inner_lr=1.2, inner_loss="mean")
    scaled = task_gradient(build_algorithm(tiny_net(), mean_loss), task).grads
    for a, b in zip(ours, scaled):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_finns_batchnorm_offsets_are_not_adapted_in_the_inner_loop():
    cfg = RunConfig(algorithm="maml", dataset="omniglot", model="conv4_finn", ways=5, shots=1, query=1,
                    inner_lr=0.4, inner_loss="sum_over_shots")
    from metacompare.models import build_model

    algorithm = build_algorithm(build_model(cfg).double(), cfg)
    assert not any(name.endswith(f"{i}.bias") for name in algorithm.adapted for i in (1, 4, 7, 10))
    assert "13.weight" in algorithm.adapted and "0.weight" in algorithm.adapted
    head = algorithm.model[13].weight
    assert 0.8 < head.std().item() < 1.2  # N(0, 1) output weights


@pytest.mark.parametrize("recipe", ["nichol", "finn"])
def test_character_splits_have_the_papers_counts_and_are_disjoint(omniglot_root, recipe):
    counts = {"nichol": (0, 150, 0), "finn": (1, 120, 30)}[recipe]
    seed, train, validation = counts
    oc = OmniglotConfig(sources=("images_background_small1", "images_background_small2"), split="characters",
                        split_seed=seed, train_characters=train, validation_characters=validation,
                        rotated_splits=("train",), download=False)
    cfg = RunConfig(dataset="omniglot", model="conv4_strided", ways=5, shots=1, data_root=str(omniglot_root), omniglot=oc)
    splits = omniglot_splits(cfg)
    assert splits["train"].images.shape[0] == train * 4 * 20  # rotated: 4 classes per character
    assert splits["test"].images.shape[0] == (242 - train - validation) * 20  # unrotated
    def characters(ds, turns):
        return {ds.images[i * 20 * turns].numpy().tobytes() for i in range(len(ds.labels_to_indices) // turns)}
    train_set, test_set = characters(splits["train"], 4), characters(splits["test"], 1)
    assert len(test_set) == 242 - train - validation and not train_set & test_set
    if validation:
        assert not characters(splits["validation"], 1) & test_set


def test_every_algorithm_of_a_comparison_gets_the_same_test_episodes(omniglot_root):
    configs = load_experiment("configs/omniglot_minimal.yaml", [f"data_root={omniglot_root}", "test_episodes=30",
                                                                 "eval_episodes=5"])
    assert {c.algorithm for c in configs} == {"reptile", "fomaml", "maml"}
    assert len({(c.train_shots, c.query, c.model) for c in configs}) > 1  # the training protocols differ
    episodes = [build_tasks(c).test for c in configs]
    for other in episodes[1:]:
        for a, b in zip(episodes[0], other):
            assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
            assert torch.equal(a.support_y, b.support_y) and torch.equal(a.query_y, b.query_y)
    assert episodes[0][0].query_x.shape[0] == 5  # one query image per class


def test_seed_streams_never_coincide():
    """A training seed equal to eval_seed + 2 used to make the sine training functions the test ones."""
    cfg = RunConfig(seed=2020, eval_seed=2018, shots=5, query=5, test_episodes=20, eval_episodes=5)
    splits = build_tasks(cfg)
    train = {tuple(splits.train.sample().all_x.flatten().tolist()) for _ in range(200)}
    test = {tuple(t.all_x.flatten().tolist()) for t in splits.test}
    assert not train & test
