"""The baselines `pretrain` and `scratch`: updates checked against plain PyTorch training, by hand."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from metacompare.algorithms import build_algorithm
from metacompare.config.loading import OmniglotConfig, RunConfig
from metacompare.data import Task, build_tasks, load_omniglot
from metacompare.models import build_model, conv4, mlp
from metacompare.training.runner import train_and_evaluate
from tests.conftest import make_sine_task, make_task

NUM_CLASSES = 7


def conv_config(**changes) -> RunConfig:
    base = dict(dataset="omniglot", model="conv4", ways=3, shots=2, query=3, inner_lr=0.1, inner_steps=2,
                outer_optimizer="sgd", outer_lr=0.05)
    return RunConfig(**{**base, **changes})


def tiny_conv(seed=0):
    torch.manual_seed(seed)
    return conv4(ways=3, filters=4, image_size=16).double()


def classified_task(seed: int, classes: list[int]) -> Task:
    task = make_task(seed=seed)
    task.classes = torch.tensor(classes)
    return task


def test_pretrain_step_is_supervised_training_over_all_classes():
    """One outer SGD step = one step of plain PyTorch training of body + all-class head, global labels."""
    tasks = [classified_task(0, [5, 0, 3]), classified_task(1, [1, 6, 2])]
    model = tiny_conv()
    algo = build_algorithm(model, conv_config(algorithm="pretrain"), num_classes=NUM_CLASSES)
    assert algo.head.out_features == NUM_CLASSES
    body, head = copy.deepcopy(model[:-1]), copy.deepcopy(algo.head)
    ways_layer = copy.deepcopy(model[-1])
    metrics = algo.meta_train_step(tasks)

    # By hand: the mean over tasks of cross-entropy on dataset-wide labels, one SGD step.
    losses = [F.cross_entropy(head(body(t.all_x)), t.classes[t.all_y]) for t in tasks]
    loss = sum(losses) / len(losses)
    loss.backward()
    with torch.no_grad():
        for p in [*body.parameters(), *head.parameters()]:
            p -= 0.05 * p.grad
    assert metrics["loss"] == pytest.approx(loss.item(), rel=1e-12)
    for got, want in zip([*algo.body.parameters(), *algo.head.parameters()], [*body.parameters(), *head.parameters()]):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for got, want in zip(model[-1].parameters(), ways_layer.parameters()):  # never trained: replaced at test
        assert torch.equal(got, want)


def test_pretrain_test_head_after_one_step_is_the_hand_derived_prototype_classifier():
    """From a zero head, one cross-entropy step gives W = lr/N Σ_i (e_{y_i} − 1/K) f_iᵀ (softmax(0) = 1/K)."""
    model = tiny_conv()
    lr = 0.3
    algo = build_algorithm(model, conv_config(algorithm="pretrain", inner_lr=lr), num_classes=NUM_CLASSES)
    task = make_task(seed=4)
    predict = algo.adapt(task, steps=1)
    with torch.no_grad():
        features = model[:-1](task.support_x)
        residual = F.one_hot(task.support_y, 3).double() - 1 / 3
        weight = lr * residual.T @ features / len(features)
        bias = lr * residual.mean(0)
        expected = features @ weight.T + bias
        torch.testing.assert_close(predict(task.support_x), expected, rtol=1e-10, atol=1e-12)
    # More steps fit the support set ever better (logistic regression on fixed features); the body stays.
    before = [p.clone() for p in model.parameters()]
    on_support = Task(task.support_x, task.support_y, task.support_x, task.support_y)
    algo = build_algorithm(model, conv_config(algorithm="pretrain", inner_lr=1.0), num_classes=NUM_CLASSES)
    (loss1, _), (loss10, _), (loss50, acc50) = [algo.evaluate(on_support, steps) for steps in (1, 10, 50)]
    assert loss1 > loss10 > loss50 and acc50 == 1.0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_pretrain_on_sine_is_joint_training_then_whole_network_fine_tuning():
    torch.manual_seed(0)
    model = mlp(hidden=(8,)).double()
    reference = copy.deepcopy(model)
    cfg = RunConfig(algorithm="pretrain", outer_optimizer="adam", outer_lr=0.01, inner_lr=0.05)
    algo = build_algorithm(model, cfg, num_classes=10_000)  # ignored for regression
    assert algo.head is None
    tasks = [make_sine_task(seed=s) for s in range(3)]
    optimizer = torch.optim.Adam(reference.parameters(), lr=0.01)
    for _ in range(5):
        algo.meta_train_step(tasks)
        optimizer.zero_grad()
        (sum(F.mse_loss(reference(t.all_x), t.all_y) for t in tasks) / len(tasks)).backward()
        optimizer.step()
    for got, want in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    task = make_sine_task(seed=9)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.05)
    for _ in range(3):  # fine-tuning = plain SGD on the support set from the pretrained weights
        optimizer.zero_grad()
        F.mse_loss(reference(task.support_x), task.support_y).backward()
        optimizer.step()
    loss, acc = algo.evaluate(task, steps=3)
    assert acc is None
    assert loss == pytest.approx(F.mse_loss(reference(task.query_x), task.query_y).item(), rel=1e-10)


def test_pretrain_checkpoint_round_trip_restores_the_all_class_head():
    tasks = [classified_task(0, [5, 0, 3])]
    cfg = conv_config(algorithm="pretrain", outer_optimizer="adam", outer_lr=0.01)
    algo = build_algorithm(tiny_conv(), cfg, num_classes=NUM_CLASSES)
    algo.meta_train_step(tasks)
    restored = build_algorithm(tiny_conv(seed=1), cfg, num_classes=NUM_CLASSES)
    restored.load_state_dict(copy.deepcopy(algo.state_dict()))
    algo.meta_train_step(tasks)
    restored.meta_train_step(tasks)  # Adam's moments came back too: the next step matches
    for a, b in zip(algo.meta_parameters(), restored.meta_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_pretrain_refuses_tasks_without_dataset_wide_classes():
    algo = build_algorithm(tiny_conv(), conv_config(algorithm="pretrain"), num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="Task.classes"):
        algo.meta_train_step([make_task()])


def test_scratch_never_moves_and_trains_each_task_from_the_same_init():
    torch.manual_seed(3)
    model = mlp(hidden=(8,)).double()
    init = copy.deepcopy(model)
    algo = build_algorithm(model, RunConfig(algorithm="scratch", inner_lr=0.05, outer_optimizer="adam", outer_lr=0.1))
    tasks = [make_sine_task(seed=s) for s in range(3)]
    task = make_sine_task(seed=7)
    first = algo.evaluate(task, steps=4)
    for _ in range(5):
        metrics = algo.meta_train_step(tasks)
    for a, b in zip(model.parameters(), init.parameters()):
        assert torch.equal(a, b)
    expected = sum(F.mse_loss(init(t.query_x), t.query_y).item() for t in tasks) / 3
    assert metrics["loss"] == pytest.approx(expected, rel=1e-12)
    assert algo.evaluate(task, steps=4) == first  # same init, same support set, same answer
    optimizer = torch.optim.SGD(init.parameters(), lr=0.05)
    for _ in range(4):  # by hand: plain SGD on the support set only, from the random init
        optimizer.zero_grad()
        F.mse_loss(init(task.support_x), task.support_y).backward()
        optimizer.step()
    assert first[0] == pytest.approx(F.mse_loss(init(task.query_x), task.query_y).item(), rel=1e-10)
    assert first[0] < F.mse_loss(model(task.query_x), task.query_y).item()  # the support set does teach


def omniglot_config(root, tmp_path, **changes) -> RunConfig:
    small = OmniglotConfig(sources=("images_background_small1", "images_background_small2"), rotations=False,
                           image_size=16, validation_alphabets=("Early_Aramaic",), test_alphabets=("Sanskrit",),
                           train_alphabets=("Balinese", "Greek"), download=False)
    base = dict(dataset="omniglot", model="conv4_strided", ways=5, shots=1, query=1, data_root=str(root),
                iterations=4, meta_batch_size=4, eval_interval=4, eval_episodes=4, test_episodes=40,
                eval_inner_steps=3, inner_lr=0.4, outer_lr=0.003, results_dir=str(tmp_path), omniglot=small)
    return RunConfig(**{**base, **changes})


def test_pretrain_head_covers_exactly_the_training_classes(omniglot_root, tmp_path):
    cfg = omniglot_config(omniglot_root, tmp_path, algorithm="pretrain")
    tasks = build_tasks(cfg)
    characters = load_omniglot(str(omniglot_root), cfg.omniglot.sources, 16)
    expected = sum(1 for _, alphabet, _ in characters if alphabet in ("Balinese", "Greek"))
    assert tasks.train.num_classes == expected
    algo = build_algorithm(build_model(cfg), cfg, num_classes=tasks.train.num_classes)
    assert algo.head.out_features == expected
    batch = [tasks.train.sample() for _ in range(8)]
    assert all(int(t.classes.max()) < expected for t in batch)
    first = algo.meta_train_step(batch)["loss"]
    for _ in range(15):
        last = algo.meta_train_step(batch)["loss"]
    assert last < 0.5 * first  # ordinary supervised training fits the pooled examples


@pytest.mark.parametrize("algorithm", ["pretrain", "scratch"])
def test_baselines_run_end_to_end_on_omniglot(algorithm, omniglot_root, tmp_path):
    """Through the runner (which hands pretrain the class count), scored on the same test episodes."""
    cfg = omniglot_config(omniglot_root, tmp_path, algorithm=algorithm)
    summary = train_and_evaluate(cfg, progress=False)
    assert summary["status"] == "finished" and summary["iterations_done"] == 4
    # 40 episodes x 5 queries: 0.34 (pretrain) and 0.30 (scratch) here, against 0.2 for guessing.
    assert 0.25 < summary["test_accuracy_mean"] <= 1.0
