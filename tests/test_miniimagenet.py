"""mini-ImageNet through learn2learn's loader, on small generated files in learn2learn's pickle format."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from metacompare.config.loading import expand
from metacompare.data import DataError, build_tasks
from metacompare.data.miniimagenet import cache_file, load_split
from metacompare.models import build_model

CLASSES = {"train": 4, "validation": 3, "test": 3}
PER_CLASS = 4


def write_cache(root, split: str, classes: int, per_class: int = PER_CLASS, shuffle_seed: int = 0) -> None:
    """A cache like learn2learn's: image_data [N, 84, 84, 3] uint8, class_dict {wnid: [indices]}.

    Every pixel of image j of class c is 40 * c + j, so a test can tell which class an image came from;
    the images are stored in a shuffled order so that class_dict, not position, has to be followed.
    """
    order = np.random.default_rng(shuffle_seed).permutation(classes * per_class)
    data = np.zeros((classes * per_class, 84, 84, 3), dtype=np.uint8)
    class_dict = {}
    for c in range(classes):
        slots = order[c * per_class:(c + 1) * per_class]
        for j, slot in enumerate(slots):
            data[slot] = 40 * c + j
        class_dict[f"n{split[:2]}{c:06d}"] = [int(s) for s in slots]
    with open(cache_file(root, split), "wb") as handle:
        pickle.dump({"image_data": data, "class_dict": class_dict}, handle)


@pytest.fixture
def mini_root(tmp_path):
    for split, classes in CLASSES.items():
        write_cache(tmp_path, split, classes, shuffle_seed=classes)
    return tmp_path


def mini_config(root, **changes):
    raw = dict(dataset="miniimagenet", data_root=str(root), model="conv4", filters=32, ways=3, shots=1,
               query=2, meta_batch_size=2, iterations=2, eval_interval=2, eval_episodes=2, test_episodes=3,
               eval_inner_steps=2, inner_lr=0.01, inner_steps=1, results_dir=str(root / "results"))
    return expand({**raw, **changes})[0]


def test_split_follows_class_dict_and_scales_to_unit_range(mini_root):
    split = load_split(mini_root, "train")
    assert split.images.dtype == torch.uint8 and split.images.shape == (16, 3, 84, 84)
    assert sorted(split.labels_to_indices) == [0, 1, 2, 3]
    for label, indices in split.labels_to_indices.items():
        values = sorted(round(split[i][0][0, 0, 0].item() * 255) for i in indices)
        assert values == [40 * label + j for j in range(PER_CLASS)]
    image, _ = split[0]
    assert image.dtype == torch.float32 and 0.0 <= image.min() and image.max() <= 1.0


def test_tasks_are_84x84_colour_with_consistent_labels(mini_root):
    splits = build_tasks(mini_config(mini_root))
    for task in [splits.train.sample(), *splits.validation, *splits.test]:
        assert task.support_x.shape == (3, 3, 84, 84) and task.query_x.shape == (6, 3, 84, 84)
        classes = {}
        for x, y in zip(task.all_x, task.all_y):
            source = int(round(x[0, 0, 0].item() * 255)) // 40
            assert classes.setdefault(int(y), source) == source  # one label, one source class
        assert len(set(classes.values())) == 3


def test_model_is_conv4_with_32_filters_and_max_pooling(mini_root):
    model = build_model(mini_config(mini_root))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs] == [(3, 32, (1, 1))] + [(32, 32, (1, 1))] * 3
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 4
    assert model[-1].in_features == 32 * 5 * 5 and model[-1].out_features == 3  # 84 -> 42 -> 21 -> 10 -> 5
    assert model(torch.rand(2, 3, 84, 84)).shape == (2, 3)


def test_a_run_trains_and_scores_on_miniimagenet(mini_root):
    from metacompare.training.runner import train_and_evaluate

    summary = train_and_evaluate(mini_config(mini_root, algorithm="fomaml"), progress=False)
    assert summary["status"] == "finished" and summary["iterations_done"] == 2
    assert 0.0 <= summary["test_accuracy_mean"] <= 1.0


def test_missing_file_names_the_path_and_the_fix(tmp_path):
    write_cache(tmp_path, "train", 4)
    with pytest.raises(DataError) as err:
        build_tasks(mini_config(tmp_path))
    message = str(err.value)
    assert str(tmp_path / "mini-imagenet-cache-validation.pkl") in message
    assert "miniimagenet.download: true" in message
    assert not (tmp_path / "mini-imagenet-cache-validation.pkl").exists()  # nothing was downloaded


def test_corrupt_file_is_a_data_error(tmp_path):
    cache_file(tmp_path, "test").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="not a readable mini-ImageNet cache"):
        load_split(tmp_path, "test")


def test_miniimagenet_needs_a_conv_model(tmp_path):
    from metacompare.config.loading import ConfigError

    with pytest.raises(ConfigError, match="miniimagenet needs a conv model"):
        expand({"dataset": "miniimagenet", "model": "mlp", "ways": 5})
