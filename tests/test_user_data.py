"""A researcher's own data: image folders, tables and texts (metacompare.data.user and its modules).

Real data where the project has it: Omniglot's images_background_small1 zip unpacked into a plain
two-level folder (alphabet/character) in a temporary folder, and scikit-learn's bundled digits
written as a CSV. No registry package here ships a labelled text table offline (scikit-learn's text
sets download), so the text table is made in the test from fixed word lists.
"""

from __future__ import annotations

import json
import os
import random
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from metacompare.config.loading import expand, load_experiment
from metacompare.data import TaskSampler, build_tasks, load_omniglot, stream_seed
from metacompare.data.folder import FolderImages
from metacompare.data.index import index_folder
from metacompare.data.splits import split_classes
from metacompare.data.text import token_ids
from metacompare.data.source import source_of
from metacompare.data.user import load_source
from metacompare.models import build_model
from tests.faults import cli, one_torch_thread, snapshot

one_thread = pytest.fixture(autouse=True)(one_torch_thread)
ALPHABETS = 5  # images_background_small1: Balinese, Early_Aramaic, Greek, Korean, Latin


@pytest.fixture(scope="module")
def small1(tmp_path_factory):
    """The small1 zip unpacked as a user would: ROOT/<alphabet>/<character>/<drawer>.png."""
    from tests.conftest import OMNIGLOT

    archive = OMNIGLOT / "images_background_small1.zip"
    if not archive.is_file():
        pytest.skip(f"real Omniglot data not found at {OMNIGLOT}")
    target = tmp_path_factory.mktemp("own")
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(target)
    return target / "images_background_small1"


def make_folder(root, classes: int = 12, per_class: int = 4, size: int = 10, colour: bool = False,
                groups: int = 0, seed: int = 0):
    """Random PNG images: ROOT/<class>/ or, with groups, ROOT/<group>/<class>/."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / (f"g{c % groups}" if groups else "") / f"class {c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (size, size, 3) if colour else (size, size)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def folder_cfg(root, tmp_path, **fields):
    raw = {"dataset": "folder", "model": "conv4_strided", "ways": 3, "shots": 1, "query": 1, "test_query": 1,
           "eval_episodes": 2, "test_episodes": 3, "results_dir": str(tmp_path / "results"),
           "user_data": {"root": str(root), "validation_fraction": 0.25, "test_fraction": 0.25}}
    for key, value in fields.items():
        raw[key] = value
    return expand(raw)[0]


def digits_csv(path):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    frame = pd.DataFrame(bunch.data, columns=[f"p{i}" for i in range(64)])
    frame["label"] = bunch.target
    frame.to_csv(path, index=False)
    return path, bunch


TOPICS = {"pets": "cat dog puppy kitten leash bowl", "markets": "stocks bonds shares trading index fell",
          "weather": "rain snow storm sunny forecast wind", "sport": "goal match team score league coach",
          "food": "bread cheese soup recipe oven salt", "travel": "train flight hotel ticket airport map",
          "music": "guitar song album band concert drum", "space": "rocket orbit planet moon star launch"}


def text_csv(path, per_class: int = 8):
    rng = random.Random(0)
    rows = [{"text": " ".join(rng.choice(words.split()) for _ in range(6)), "label": topic}
            for topic, words in TOPICS.items() for _ in range(per_class)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def refused(capsys, needles, *argv) -> str:
    code, out, err = cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("metacompare: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# --------------------------------------------------------------------------------------- folder
def test_index_lists_files_without_reading_them(tmp_path, monkeypatch):
    """Indexing never opens an image: garbage bytes named .png index fine; the digest follows
    paths, sizes and mtimes."""
    for c in range(3):
        (tmp_path / f"c{c}").mkdir()
        for i in range(2):
            (tmp_path / f"c{c}" / f"{i}.png").write_bytes(b"not a png" * (c + 1))
    (tmp_path / "c0" / ".DS_Store").write_bytes(b"x")
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("index opened an image"))
    index = index_folder(tmp_path)
    assert index.classes == ["c0", "c1", "c2"] and index.per_class == [2, 2, 2] and index.ignored == 1
    assert index.files[:2] == [os.path.join("c0", "0.png"), os.path.join("c0", "1.png")]
    assert index.labels == [0, 0, 1, 1, 2, 2]
    before = index.digest
    (tmp_path / "c1" / "0.png").write_bytes(b"changed, longer bytes")
    assert index_folder(tmp_path).digest != before


def test_folder_images_equal_the_builtin_omniglot_loader(small1):
    """The correctness check of the folder path: the same characters give the very same tensors as
    metacompare.data.load_omniglot (grey, Lanczos to 28, ink = 1 with invert)."""
    from tests.conftest import OMNIGLOT

    builtin = load_omniglot(str(OMNIGLOT), ("images_background_small1",), 28)
    index = index_folder(small1)
    assert len(index.classes) == len(builtin) == 136 and len({g for g in index.groups}) == ALPHABETS
    images = FolderImages(small1, index.files, index.labels, 1, 28, invert=True, cache_mb=8)
    for c in (0, 57, 135):
        alphabet, character = index.classes[c].split("/")
        expected = builtin[("images_background_small1", alphabet, character)]
        got = torch.stack([images[i][0] for i in images.labels_to_indices[c]])
        assert got.shape == expected.shape == (20, 1, 28, 28)
        assert torch.equal(got, expected)


def test_folder_tasks_equal_the_builtin_loaders_tasks(small1):
    """The same characters in the same order through both loaders give the very same episodes from the
    same seed, so any algorithm scores the same on either: the folder path's results are the
    built-in path's."""
    from tests.conftest import OMNIGLOT
    from metacompare.data import OmniglotCharacters

    builtin = load_omniglot(str(OMNIGLOT), ("images_background_small1",), 28)
    keys = sorted(builtin)[40:52]
    index = index_folder(small1)
    number = {f"{alphabet}/{character}": i for i, (_, alphabet, character) in enumerate(keys)}
    picked = [(f, number[index.classes[label]]) for f, label in zip(index.files, index.labels)
              if index.classes[label] in number]
    folder = FolderImages(small1, [f for f, _ in picked], [label for _, label in picked], 1, 28, True, 8)
    reference = OmniglotCharacters([builtin[key] for key in keys], rotations=False)
    cfg = expand({"dataset": "omniglot", "model": "conv4", "ways": 5, "shots": 1, "query": 3})[0]
    samplers = [TaskSampler(d, cfg, -1, stream_seed(3, "test tasks"), "test", 1, 3) for d in (reference, folder)]
    for _ in range(4):
        a, b = (s.sample() for s in samplers)
        assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
        assert torch.equal(a.support_y, b.support_y) and torch.equal(a.query_y, b.query_y)


def test_folder_cache_is_bounded(tmp_path):
    root = make_folder(tmp_path / "d", classes=3, per_class=5)
    index = index_folder(root)
    images = FolderImages(root, index.files, index.labels, 1, 10, invert=False, cache_mb=4 * 400 / 2**20)
    assert images.capacity == 4
    first = images[0][0]
    for i in range(len(images)):
        images[i]
    assert len(images.cache) == 4 and 0 not in images.cache
    assert torch.equal(images[0][0], first) and first.shape == (1, 10, 10) and 0 <= first.min() <= first.max() <= 1


def test_colour_is_detected_and_sizes_the_network(tmp_path):
    root = make_folder(tmp_path / "rgb", classes=12, per_class=3, colour=True)
    cfg = folder_cfg(root, tmp_path, model="conv4_finn", filters=8)
    tasks = build_tasks(cfg)
    assert tasks.record["image"] == {"channels": 3, "size": 84}
    task = tasks.train.sample()
    assert task.support_x.shape == (3, 3, 84, 84)
    assert build_model(cfg)(task.support_x).shape == (3, 3)


def test_inspect_and_a_tiny_compare_on_the_unpacked_zip(small1, tmp_path, capsys):
    code, out, err = cli(capsys, "inspect", small1)
    assert code == 0, err
    assert "folder (two levels: group/class)" in out and f"136 in {ALPHABETS} groups" in out
    assert "min 20, median 20, max 20" in out and "-> grey, resized to 28x28" in out
    assert "largest task with 1 query per class:" in out and "5-way 1-shot with 1 query per class: fits" in out
    results = tmp_path / "r"
    code, out, err = cli(capsys, "compare", "--data", small1, "--budget", "work:3000", "--no-tune", "--seeds", "1",
                         "--results-dir", results, "--no-progress", "--set", "algorithm=[fomaml,pretrain]",
                         "--set", "test_episodes=4", "--set", "eval_episodes=2", "--set", "user_data.image_size=14",
                         "--set", "eval_inner_steps=2", "--set", "filters=8")
    assert code == 0, err
    folder = results / "folder_images_background_small1_compare_work3000"
    report = (folder / "compare" / "report.md").read_text()
    answer = report.split("\n\n")[1]
    assert answer.startswith("**Answer: ") and "untrained network" in answer and "How sure" in answer
    assert "| pretrain |" in report and "| fomaml |" in report
    assert (folder / "data_config.yaml").is_file()
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*/splits.json"))]
    assert len(records) == 2 and records[0]["classes"] == records[1]["classes"]
    groups = [{name.split("/")[0] for name in records[0]["classes"][s]} for s in ("train", "validation", "test")]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])  # alphabet-disjoint


def test_names_with_spaces_and_non_ascii_run(tmp_path, capsys):
    root = make_folder(tmp_path / "mes données", classes=10, per_class=3)
    (root / "class 00").rename(root / "café au lait")
    (root / "class 01" / "0.png").rename(root / "class 01" / "ünïcode name.png")
    code, out, err = cli(capsys, "run", "--data", root, "--ways", "2", "--set", "algorithm=fomaml",
                         "--set", "iterations=2", "--set", "test_episodes=2", "--set", "eval_episodes=1",
                         "--set", "eval_interval=1", "--set", "user_data.image_size=8", "--set", "model=conv4_strided",
                         "--results-dir", tmp_path / "r", "--no-progress", "--no-report")
    assert code == 0, err
    (record,) = (tmp_path / "r").glob("folder_mes_donn_es/fomaml-*/splits.json")
    names = sum(json.loads(record.read_text())["classes"].values(), [])
    assert "café au lait" in names and len(names) == 10


# --------------------------------------------------------------------------------------- splits
def test_splits_are_seeded_disjoint_and_cover_every_class():
    classes = [f"c{i}" for i in range(50)]
    groups = [""] * 50
    a = split_classes(classes, groups, 0.2, 0.2, 7)
    assert a == split_classes(list(classes), groups, 0.2, 0.2, 7)
    assert a != split_classes(classes, groups, 0.2, 0.2, 8)
    assert sorted(a["train"] + a["validation"] + a["test"]) == list(range(50))
    assert len(a["test"]) == 10 and len(a["validation"]) == 10 and len(a["train"]) == 30
    assert split_classes(classes, groups, 0.0, 0.3, 0)["validation"] == []


def test_grouped_splits_keep_groups_whole():
    groups = [f"g{i % 7}" for i in range(40)]
    classes = [f"{g}/c{i}" for i, g in enumerate(groups)]
    for seed in range(5):
        split = split_classes(classes, groups, 0.2, 0.2, seed)
        owners = [{groups[c] for c in split[name]} for name in ("train", "validation", "test")]
        assert all(owners) and not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
        assert sorted(sum(split.values(), [])) == list(range(40))


def test_every_algorithm_sees_the_same_split(tmp_path):
    root = make_folder(tmp_path / "d", classes=12, per_class=3)
    records = [build_tasks(folder_cfg(root, tmp_path, algorithm=a)).record for a in ("fomaml", "reptile")]
    assert records[0] == records[1]
    chosen = records[0]["classes"]
    assert len(chosen["train"]) == 6 and len(chosen["validation"]) == 3 and len(chosen["test"]) == 3
    assert set(chosen["train"]).isdisjoint(chosen["test"]) and set(chosen["validation"]).isdisjoint(chosen["test"])


# ---------------------------------------------------------------------------------------- table
def test_digits_table_standardised_by_training_classes_only(tmp_path):
    path, bunch = digits_csv(tmp_path / "digits.csv")
    cfg = expand({"dataset": "table", "model": "metamodel", "ways": 5, "shots": 1, "query": 2,
                  "user_data": {"root": str(path), "validation_fraction": 0.0, "test_fraction": 0.5}})[0]
    datasets, record = source_of(cfg).splits(cfg)
    train_digits = [int(c) for c in record["classes"]["train"]]
    rows = np.isin(bunch.target, train_digits)
    mean, std = bunch.data[rows].mean(0), bunch.data[rows].std(0)
    std[std == 0] = 1
    first = int(np.nonzero(rows)[0][0])
    assert np.allclose(datasets["train"][0][0].numpy(), (bunch.data[first] - mean) / std, atol=1e-5)
    assert datasets["validation"] is datasets["train"] and len(datasets["test"].labels_to_indices) == 5
    assert torch.allclose(datasets["train"].values.mean(0), torch.zeros(64), atol=1e-4)
    assert build_model(cfg)(datasets["train"].values[:4]).shape == (4, 5)


def test_digits_table_runs_from_the_command_line(tmp_path, capsys):
    path, _ = digits_csv(tmp_path / "digits.csv")
    code, out, _ = cli(capsys, "inspect", path)
    assert code == 0 and "table" in out and "64 features per row" in out and "classes: 10; 1797 examples" in out
    code, out, err = cli(capsys, "run", "--data", path, "--set", "algorithm=[maml,pretrain]", "--set", "iterations=3",
                         "--set", "test_episodes=5", "--set", "eval_episodes=2", "--set", "eval_interval=3",
                         "--results-dir", tmp_path / "r", "--no-progress", "--no-report")
    assert code == 0, err
    assert "maml: test accuracy" in out and "pretrain: test accuracy" in out


def test_parquet_table_reads_like_the_csv(tmp_path, capsys):
    pytest.importorskip("pyarrow")
    path, _ = digits_csv(tmp_path / "digits.csv")
    pd.read_csv(path).to_parquet(tmp_path / "digits.parquet")
    outputs = []
    for name in ("digits.csv", "digits.parquet"):
        code, out, err = cli(capsys, "inspect", tmp_path / name)
        assert code == 0, err
        outputs.append(out.replace(name, "FILE"))
    assert outputs[0] == outputs[1] and "64 features per row" in outputs[0]


# ----------------------------------------------------------------------------------------- text
def test_text_tokens_are_hashed_deterministically():
    from sklearn.utils import murmurhash3_32

    ids = token_ids(["The cat sat", "the CAT sat", "x"], buckets=64, max_tokens=7)
    assert ids.shape == (3, 7) and ids.dtype == np.int64
    tokens = ["the", "cat", "sat", "the cat", "cat sat"]  # lower-cased words, then word bigrams
    assert ids[0].tolist() == [1 + murmurhash3_32(t, seed=0, positive=True) % 63 for t in tokens] + [0, 0]
    assert (ids[0] == ids[1]).all() and (ids[2] == 0).all()  # one-letter words are not tokens
    assert token_ids(["The cat sat"], 64, 2)[0].tolist() == ids[0, :2].tolist()  # truncated to the first


def test_text_table_runs_every_algorithm_on_the_bag_of_embeddings(tmp_path, capsys):
    path = text_csv(tmp_path / "topics.csv")
    code, out, _ = cli(capsys, "inspect", path, "--ways", "2")
    assert code == 0 and ": text" in out and "tokens per text" in out
    code, out, err = cli(capsys, "run", "--data", path, "--ways", "2", "--set", "iterations=2", "--set", "test_episodes=3",
                         "--set", "eval_episodes=1", "--set", "eval_interval=2", "--set", "user_data.vocab_buckets=256",
                         "--set", "user_data.embedding_dim=8", "--set", "eval_inner_steps=2",
                         "--results-dir", tmp_path / "r", "--no-progress", "--no-report")
    assert code == 0, err
    for name in ("reptile", "fomaml", "maml", "pretrain"):
        assert f"{name}: test accuracy" in out


def test_bag_of_embeddings_ignores_padding():
    cfg = expand({"dataset": "text", "model": "bag_of_embeddings", "ways": 2,
                  "user_data": {"root": "x.csv", "vocab_buckets": 32, "embedding_dim": 4}})[0]
    model = build_model(cfg)
    bag = model[0]
    tokens = torch.tensor([[3, 5, 0, 0], [3, 5, 5, 0]])
    expected = torch.stack([bag.weight[[3, 5]].mean(0), bag.weight[[3, 5, 5]].mean(0)])
    assert torch.allclose(bag(tokens), expected)


# ----------------------------------------------------------------------------------- bad inputs
def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    refused(capsys, ("empty", "holds no class folders", "ROOT/<class>/<image>"), "inspect", tmp_path / "empty")


def test_non_image_file(tmp_path, capsys):
    root = make_folder(tmp_path / "d", classes=6, per_class=2)
    (root / "class 03" / "notes.txt").write_text("hello")
    refused(capsys, ("notes.txt", "not an image file", "move it out"), "inspect", root)


def test_corrupt_image(tmp_path, capsys):
    root = make_folder(tmp_path / "d", classes=12, per_class=3)
    (root / "class 04" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    refused(capsys, ("class 04", "1.png", "not a readable image", "delete or replace it", "--verify"),
            "inspect", root, "--verify")
    index = index_folder(root)
    images = FolderImages(root, index.files, index.labels, 1, 8, False, 1)
    with pytest.raises(Exception, match="1.png: not a readable image"):
        images[index.files.index(os.path.join("class 04", "1.png"))]


def test_unreadable_file(tmp_path, capsys, monkeypatch):
    root = make_folder(tmp_path / "d", classes=6, per_class=2)
    locked = str(root / "class 02" / "1.png")
    real = os.access
    monkeypatch.setattr("metacompare.data.index.os.access",
                        lambda path, mode: False if str(path) == locked else real(path, mode))  # we run as root here
    refused(capsys, ("1.png", "cannot be read", "chmod"), "inspect", root)


def test_class_with_one_example(tmp_path, capsys):
    root = make_folder(tmp_path / "d", classes=20, per_class=3)
    for extra in ("1.png", "2.png"):
        (root / "class 07" / extra).unlink()
    refused(capsys, ("class 07", "has 1 example", "add examples"), "inspect", root)


def test_all_one_class(tmp_path, capsys):
    refused(capsys, ("one class 'class 00'",), "inspect", make_folder(tmp_path / "d", classes=1, per_class=5))
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": [1.0, 2.0, 3.0], "label": ["x", "x", "x"]}).to_csv(path, index=False)
    refused(capsys, ("t.csv", "one class 'x'", "column 'label'"), "inspect", path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_in_a_table(tmp_path, capsys, bad):
    path = tmp_path / "t.csv"
    frame = pd.DataFrame({"a": np.arange(40.0), "b": np.ones(40), "label": np.arange(40) % 10})
    frame.loc[17, "b"] = bad
    frame.to_csv(path, index=False)
    refused(capsys, ("t.csv", "row 18 (line 19)", "column 'b'", "refused", "fill or drop"), "inspect", path)


def test_missing_label_column(tmp_path, capsys):
    path, _ = digits_csv(tmp_path / "digits.csv")
    refused(capsys, ("digits.csv", "no column 'digit'", "--label-column"), "inspect", path, "--label-column", "digit")


def test_non_utf8_text(tmp_path, capsys):
    path = tmp_path / "texts.csv"
    path.write_bytes("text,label\nhello there,a\n".encode() + "caf\xe9 latte,b\n".encode("latin-1"))
    refused(capsys, ("texts.csv", "line 3", "not UTF-8", "UTF-8"), "inspect", path)


def test_folder_changed_between_runs_is_refused(tmp_path, capsys):
    root = make_folder(tmp_path / "d", classes=10, per_class=3)
    argv = ["run", "--data", root, "--ways", "2", "--set", "iterations=1", "--set", "test_episodes=1",
            "--set", "eval_episodes=1", "--set", "eval_interval=1", "--set", "user_data.image_size=8",
            "--set", "model=conv4_strided", "--results-dir", tmp_path / "r", "--no-progress", "--no-report"]
    code, _, err = cli(capsys, *argv, "--set", "algorithm=fomaml")
    assert code == 0, err
    (root / "class 03" / "9.png").write_bytes((root / "class 03" / "0.png").read_bytes())
    before = snapshot(tmp_path / "r")
    refused(capsys, ("d: changed since", "data_index.json", "restore it", "--set experiment="),
            *argv, "--set", "algorithm=maml")
    assert not [k for k in snapshot(tmp_path / "r") if k not in before and "maml-" in k and k.endswith(".pt")]


def test_config_or_data_not_both(tmp_path, capsys):
    refused(capsys, ("give a config file or --data PATH",), "run")
    refused(capsys, ("give a config file or --data PATH",), "run", "configs/sine.yaml", "--data", tmp_path)


def test_recorded_run_ids_are_unchanged():
    """The user_data section at its defaults leaves existing run ids alone (results/ keeps them)."""
    ids = [c.run_id() for c in load_experiment("configs/omniglot_minimal.yaml")]
    assert ids == ["reptile-7f022da1", "fomaml-cc9b329f", "maml-e3a60bec"]


def test_sampler_serves_user_data_like_any_dataset(tmp_path):
    root = make_folder(tmp_path / "d", classes=12, per_class=4)
    cfg = folder_cfg(root, tmp_path)
    datasets, _ = source_of(cfg).splits(cfg)
    sampler = TaskSampler(datasets["test"], cfg, -1, stream_seed(0, "x"), "test", 1, 2)
    task = sampler.sample()
    assert task.support_x.shape == (3, 1, 28, 28) and task.query_x.shape == (6, 1, 28, 28)
    assert sorted(task.support_y.tolist()) == [0, 1, 2] and len(set(task.classes.tolist())) == 3
    assert load_source(cfg).per_class == [4] * 12
