"""Digit tasks (scikit-learn's bundled digits), their class split, the tutorial's MetaModel, and the
training-class episodes behind the generalisation gap (outline 9.4)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from metacompare.algorithms import ALGORITHMS, build_algorithm
from metacompare.config.loading import ConfigError, expand
from metacompare.data import build_tasks
from metacompare.data.digits import DigitImages, load_sklearn_digits
from metacompare.models import build_model, metamodel
from metacompare.storage.results import SUMMARY_COLUMNS, read_csv
from tests.faults import cli, one_torch_thread, write_config

one_thread = pytest.fixture(autouse=True)(one_torch_thread)

SKLEARN_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]  # load_digits(): images per digit


def digits_config(**fields) -> dict:
    base = dict(dataset="digits", model="metamodel", algorithm="reptile", ways=3, shots=2, query=3,
                iterations=2, meta_batch_size=2, eval_interval=1, eval_episodes=4, test_episodes=6,
                eval_inner_steps=2, inner_lr=0.1, inner_steps=2,
                digits={"train_classes": [0, 1, 2, 3], "test_classes": [6, 7, 8]})
    return {**base, **fields}


def config(**fields):
    return expand(digits_config(**fields))[0]


def digit_of(images: torch.Tensor) -> list[int]:
    """Which digit each task image is, by looking it up among the bundled images."""
    table, digits = load_sklearn_digits()
    pixels = (images[:, 0] * 255).round().to(torch.uint8).flatten(1)
    hits = (pixels[:, None, :] == table.flatten(1)[None]).all(-1)
    assert bool(hits.any(1).all()), "a task image is not one of the dataset's images"
    return [int(digits[row.nonzero()[0]]) for row in hits]


# ------------------------------------------------------------------------------------- dataset
def test_bundled_digits_are_upsampled_to_28x28():
    images, digits = load_sklearn_digits()
    assert images.shape == (1797, 28, 28) and images.dtype == torch.uint8
    assert torch.bincount(digits).tolist() == SKLEARN_COUNTS
    from sklearn.datasets import load_digits

    small = torch.from_numpy(load_digits().images).double() / 16 * 255  # pixel values 0..16 -> 0..255
    # Bilinear, half-pixel centres: output pixel i samples source row (i + 0.5) * 8/28 - 0.5, clamped.
    # Corners: rows -0.357 -> 0 and 7.357 -> 7, so they copy the source corners; pixel 14 samples
    # 14.5 * 8/28 - 0.5 = 3.642857: 5/14 of row 3 and 9/14 of row 4 (likewise for columns).
    w = torch.tensor([5 / 14, 9 / 14], dtype=torch.float64)
    centre = torch.einsum("i,nij,j->n", w, small[:, 3:5, 3:5], w)
    assert torch.equal(images[:, 0, 0], small[:, 0, 0].round().to(torch.uint8))
    assert torch.equal(images[:, 27, 27], small[:, 7, 7].round().to(torch.uint8))
    assert (images[:, 14, 14].double() - centre).abs().max() <= 0.5 + 1e-6


def test_a_split_keeps_its_digits_and_numbers_them_from_zero():
    images, digits = load_sklearn_digits()
    split = DigitImages(images, digits, (7, 2, 9))
    assert len(split) == SKLEARN_COUNTS[7] + SKLEARN_COUNTS[2] + SKLEARN_COUNTS[9]
    assert {k: len(v) for k, v in split.labels_to_indices.items()} == {0: 179, 1: 177, 2: 180}
    x, label = split[split.labels_to_indices[2][0]]
    assert x.shape == (1, 28, 28) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert digit_of(x[None]) == [9] and label == 2


def test_tasks_come_from_the_configured_digits():
    tasks = build_tasks(config())
    for task in tasks.test:
        assert task.support_x.shape == (6, 1, 28, 28) and task.query_x.shape == (9, 1, 28, 28)
        assert sorted(task.support_y.tolist()) == [0, 0, 1, 1, 2, 2]
        assert set(digit_of(task.all_x)) <= {6, 7, 8}
        # labels are permuted per task but consistent within it: one digit per label
        digits = digit_of(task.all_x)
        assert len({(int(y), d) for y, d in zip(task.all_y, digits)}) == 3
    for task in [tasks.train.sample() for _ in range(5)] + tasks.validation + tasks.train_episodes:
        assert set(digit_of(task.all_x)) <= {0, 1, 2, 3}  # validation: training digits by default


def test_labels_are_permuted_across_tasks():
    tasks = build_tasks(config(ways=3, digits={"train_classes": [0, 1, 2], "test_classes": [6, 7, 8]}))
    pairings = set()
    for task in tasks.test:
        pairings.add(tuple(d for _, d in sorted(set(zip(task.support_y.tolist(), digit_of(task.support_x))))))
    assert len(pairings) > 1, "digit 6 always got the same label"


def test_declared_validation_digits():
    tasks = build_tasks(config(ways=2, digits={"train_classes": [0, 1, 2], "validation_classes": [4, 5],
                                               "test_classes": [7, 8]}))
    assert all(set(digit_of(t.all_x)) == {4, 5} for t in tasks.validation)


# ------------------------------------------------------------------------------- bad splits
BAD_SPLITS = {
    "ways_above_train": ({"ways": 5}, "digits.train_classes: 5-way tasks need at least 5 digits, the split has 4"),
    "ways_above_validation": ({"digits": {"train_classes": [0, 1, 2], "validation_classes": [3, 4],
                                          "test_classes": [6, 7, 8]}},
                              "digits.validation_classes: 3-way tasks need at least 3 digits"),
    "empty_test": ({"digits": {"test_classes": []}}, "digits.test_classes: 3-way tasks need at least 3 digits, "
                                                     "the split has 0"),
    "overlap": ({"digits": {"train_classes": [0, 1, 2, 5], "test_classes": [5, 6, 7]}},
                "digits: train_classes and test_classes share [5]; make the class lists disjoint"),
    "overlap_validation": ({"digits": {"validation_classes": [3, 4, 5]}},
                           "digits: train_classes and validation_classes share [3]"),
    "not_a_digit": ({"digits": {"test_classes": [7, 8, 10]}}, "digits.test_classes: [10] are not digits"),
    "repeated": ({"digits": {"test_classes": [7, 7, 8]}}, "digits.test_classes: lists a digit twice"),
    "not_a_list": ({"digits": {"test_classes": "five"}}, "digits.test_classes[0]: expected a whole number"),
    "unknown_field": ({"digits": {"test_digits": [5]}}, "unknown field 'digits.test_digits'"),
    "mlp_model": ({"model": "mlp"}, "model: digits needs a conv model; set model: conv4 or conv4_strided "
                                    "(or metamodel, the tutorial's MLP)"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPLITS))
def test_bad_split_is_one_line_with_exit_2(case, tmp_path, capsys):
    fields, needle = BAD_SPLITS[case]
    cfg = digits_config(**fields)
    if "digits" in fields:
        cfg["digits"] = {**digits_config()["digits"], **fields["digits"]}
    path = write_config(tmp_path / "cfg.yaml", cfg)
    code, _, err = cli(capsys, "run", str(path), "--results-dir", str(tmp_path / "results"), "--no-progress")
    assert code == 2 and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "results").exists()


# ----------------------------------------------------------------------------------- MetaModel
def test_metamodel_is_the_seeds_784_64_64_n_mlp():
    net = metamodel(ways=5)
    shapes = [tuple(p.shape) for p in net.parameters()]
    assert shapes == [(64, 784), (64,), (64, 64), (64,), (5, 64), (5,)]
    assert net(torch.zeros(7, 1, 28, 28)).shape == (7, 5)
    x = torch.randn(3, 1, 28, 28)
    layers = [m for m in net if isinstance(m, torch.nn.Linear)]
    by_hand = layers[2](torch.relu(layers[1](torch.relu(layers[0](x.flatten(1))))))
    torch.testing.assert_close(net(x), by_hand)


def test_build_model_sizes_metamodel_for_each_dataset():
    assert build_model(config())[-1].out_features == 3
    omniglot = expand({"dataset": "omniglot", "model": "metamodel", "ways": 4, "omniglot": {"image_size": 14}})[0]
    assert build_model(omniglot)[1].in_features == 14 * 14 and build_model(omniglot)[-1].out_features == 4


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_every_algorithm_steps_on_the_metamodel(algorithm):
    cfg = config(algorithm=algorithm)
    tasks = build_tasks(cfg)
    model = build_model(cfg)
    before = [p.detach().clone() for p in model.parameters()]
    metrics = build_algorithm(model, cfg, num_classes=tasks.train.num_classes).meta_train_step(
        [tasks.train.sample() for _ in range(2)])
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["loss"] > 0
    moved = [float((p.detach() - b).abs().max()) for p, b in zip(model.parameters(), before)]
    if algorithm in ("reptile", "fomaml", "maml", "naive_reptile", "naive_reptile_fixed"):
        assert all(m > 0 for m in moved), moved


@pytest.mark.parametrize("algorithm", ["maml", "reptile"])
def test_batched_tasks_match_the_loop_on_the_metamodel(algorithm):
    cfg = config(algorithm=algorithm)
    tasks = [t.to("cpu", torch.float64) for t in build_tasks(cfg).test[:3]]
    models = [build_model(cfg).double() for _ in range(2)]
    for model, batch in zip(models, (False, True)):
        build_algorithm(model, dataclasses.replace(cfg, batch_tasks=batch)).meta_train_step(tasks)
    for p, q in zip(*(m.parameters() for m in models)):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------- generalisation episodes
def test_training_class_episodes_are_fixed_by_eval_seed_alone():
    a, b = build_tasks(config()), build_tasks(config(seed=5))
    assert len(a.train_episodes) == 6
    for x, y in zip(a.train_episodes, b.train_episodes):
        assert torch.equal(x.support_x, y.support_x) and torch.equal(x.query_y, y.query_y)
    c = build_tasks(config(eval_seed=7))
    assert not torch.equal(a.train_episodes[0].support_x, c.train_episodes[0].support_x)


def test_training_class_episodes_are_a_stream_of_their_own():
    """Same digits as validation and as training, but none of their draws."""
    cfg = config(eval_episodes=6)
    tasks = build_tasks(cfg)
    for other in (tasks.validation, [tasks.train.sample() for _ in range(6)]):
        assert all(not torch.equal(t.support_x, o.support_x) for t in tasks.train_episodes for o in other)


def test_a_run_records_the_generalisation_gap(tmp_path, capsys):
    path = write_config(tmp_path / "cfg.yaml", digits_config())
    code, out, err = cli(capsys, "run", str(path), "--results-dir", str(tmp_path / "r"), "--no-progress",
                         "--no-report")
    assert code == 0, err
    [row] = read_csv(tmp_path / "r" / "default" / "runs.csv")
    assert list(row) == SUMMARY_COLUMNS
    seen, test = float(row["train_tasks_accuracy_mean"]), float(row["test_accuracy_mean"])
    assert 0 <= seen <= 1 and float(row["train_tasks_accuracy_ci95"]) >= 0
    assert float(row["generalisation_gap"]) == pytest.approx(seen - test, abs=1e-12)
    assert float(row["train_tasks_loss_mean"]) > 0
