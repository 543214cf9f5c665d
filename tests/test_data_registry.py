"""Data sources are plug-ins: only the registry (``metacompare/data/source.py``) tells datasets apart by
name, and a source registered by a test is usable by name (validated, its tasks built, its shape known to
the models, inspected) and gone once unregistered."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from metacompare import data, models
from metacompare.algorithms import build_algorithm
from metacompare.config.loading import ConfigError, expand
from metacompare.data.labelled import Labelled
from metacompare.data.source import DataSource

PACKAGE = Path(__file__).resolve().parent.parent / "metacompare"
REGISTRY = PACKAGE / "data" / "source.py"
TESTED = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)
# Not a choice of behaviour but a requirement: Lake's one-shot runs are Omniglot's own characters.
REQUIRES_BY_NAME = {PACKAGE / "data" / "lake_runs.py"}


def name_tests(source: str) -> list[int]:
    """Lines that compare a ``dataset`` (``cfg.dataset``, ``args.dataset``, a plain ``dataset``) with
    ``==``, ``!=``, ``in`` or ``not in``: choosing behaviour by the data's name."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(isinstance(op, TESTED) for op in node.ops):
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Name) and o.id == "dataset" or isinstance(o, ast.Attribute) and o.attr == "dataset"
                   for o in operands):
                lines.append(node.lineno)
    return lines


def test_the_check_sees_a_test_by_name():
    snippet = 'if cfg.dataset == "sine":\n    pass\nok = args.dataset in ("a", "b")\nbad = dataset not in X\nc = s.dataset != "x"\n'
    assert name_tests(snippet) == [1, 3, 4, 5]
    assert name_tests('dataset_name = "sine"\nif cfg.model == "mlp":\n    pass\n') == []


def test_no_dataset_is_chosen_by_name_outside_the_registry():
    files = sorted(p for p in PACKAGE.rglob("*.py") if p != REGISTRY and p not in REQUIRES_BY_NAME)
    assert len(files) > 50  # the whole package is read
    found = [f"{p.relative_to(PACKAGE.parent)}:{line}" for p in files for line in name_tests(p.read_text())]
    assert not found, f"datasets told apart by name (ask the source in metacompare.data.source): {found}"


def test_classification_or_regression_is_what_the_source_declares():
    from metacompare.data.source import classifies

    assert not classifies("sine") and classifies("omniglot") and classifies("folder")
    assert classifies("a dataset an old record names")  # no source: scored by accuracy, as before
    assert [n for n, s in data.SOURCES.items() if not s.classification] == ["sine"]


def test_every_config_dataset_is_a_registered_source():
    from metacompare.config.loading import CHOICES

    assert list(CHOICES["dataset"]) == ["sine", "omniglot", "miniimagenet", "mnist", "digits", "folder", "table",
                                        "text"]
    assert all(data.SOURCES[name].name == name for name in CHOICES["dataset"])


@pytest.mark.parametrize("name", list(data.SOURCES))
def test_every_source_declares_what_the_rest_reads(name, tmp_path):
    """The contract over the registry: its networks are models, its fields are config fields, and its
    shapes (known without reading images) are images exactly when it says so."""
    from dataclasses import replace

    from metacompare.config.loading import CHOICES, RunConfig

    source = data.SOURCES[name]
    assert source.name == name and source.networks and set(source.networks) <= set(CHOICES["model"])
    base = RunConfig()
    section, _, field = source.size_field.rpartition(".")
    assert source.size_field == "model" or hasattr(getattr(base, section), field)
    assert source.section is None or hasattr(base, source.section)
    table = tmp_path / "t.csv"
    table.write_text("label,a,b\nx,1,2\ny,3,4\n")
    cfg = replace(base, dataset=name, user_data=replace(base.user_data, root=str(table)))
    shapes = source.possible_shapes(cfg)
    assert shapes and all(s and all(isinstance(n, int) and n > 0 for n in s) for s in shapes)
    assert all(len(s) == 3 for s in shapes) == source.images


# ------------------------------------------------------------------------------------- a toy source
WIDTH = 4


class Blobs(Labelled):
    """``per_class`` vectors of each class around the class's own centre."""

    def __init__(self, classes: int, per_class: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        centres = torch.randn(classes, WIDTH, generator=generator) * 3
        labels = [c for c in range(classes) for _ in range(per_class)]
        super().__init__(labels)
        self.values = centres[labels] + 0.1 * torch.randn(len(labels), WIDTH, generator=generator)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.values[index], self.labels[index]


class ToyBlobs(DataSource):
    name = "toy_blobs"
    networks = ("metamodel",)
    images = False

    def splits(self, cfg):
        return {"train": Blobs(6, 5, 0), "validation": Blobs(3, 5, 1), "test": Blobs(4, 5, 2)}, None

    def input_shape(self, cfg, channels=None):
        return (WIDTH,)


@pytest.fixture
def toy():
    source = data.register(ToyBlobs())
    try:
        yield source
    finally:
        data.unregister(source.name)


def toy_config(**fields):
    raw = dict(dataset="toy_blobs", model="metamodel", algorithm="fomaml", ways=2, shots=1, query=2, iterations=1,
               meta_batch_size=2, eval_episodes=3, test_episodes=5, eval_inner_steps=1, inner_steps=1)
    return expand({**raw, **fields})[0]


def test_a_registered_source_is_usable_by_name(toy):
    cfg = toy_config()
    assert data.source_of(cfg) is toy
    tasks = data.build_tasks(cfg)
    task = tasks.train.sample()
    assert task.support_x.shape == (2, WIDTH) and task.query_x.shape == (4, WIDTH)
    assert sorted(task.support_y.tolist()) == [0, 1]
    assert len(tasks.validation) == 3 and len(tasks.test) == 5 and len(tasks.train_episodes) == 5
    assert set(tasks.test[0].classes.tolist()) <= set(range(4))  # drawn from the 4 test classes
    assert models.input_shape(cfg) == (WIDTH,)
    model = models.build_model(cfg)
    assert model(task.query_x).shape == (4, 2)
    before = [p.detach().clone() for p in model.parameters()]
    build_algorithm(model, cfg).meta_train_step([tasks.train.sample(), tasks.train.sample()])
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))  # it trains on the toy tasks
    report = data.describe(cfg)
    assert report.splitlines() == ["toy_blobs: examples of shape (4,)",
                                   "  train: 6 classes, 30 examples (per class: min 5, max 5)",
                                   "  validation: 3 classes, 15 examples (per class: min 5, max 5)",
                                   "  test: 4 classes, 20 examples (per class: min 5, max 5)"]


def test_a_source_refuses_a_network_it_does_not_take(toy):
    with pytest.raises(ConfigError, match="model: dataset toy_blobs takes model: metamodel, got 'conv4'"):
        toy_config(model="conv4")


def test_an_unregistered_source_is_gone(toy):
    data.unregister(toy.name)
    try:
        assert toy.name not in data.SOURCES
        with pytest.raises(ConfigError, match="dataset: unknown 'toy_blobs'"):
            toy_config()
        with pytest.raises(ConfigError, match="dataset: unknown 'toy_blobs'"):
            data.source_of("toy_blobs")
    finally:
        data.register(toy)  # the fixture unregisters it
    with pytest.raises(ValueError, match="registered twice"):
        data.register(ToyBlobs())


def test_models_and_validation_know_data_only_through_the_registry():
    from tests.test_imports import imports_of, modules

    known = set(modules())
    for name in ("metacompare.models", "metacompare.config.validation"):
        used = {m for m in imports_of(name, modules()[name], known) if m.startswith("metacompare.data")}
        assert used <= {"metacompare.data", "metacompare.data.source"}, (name, used)
