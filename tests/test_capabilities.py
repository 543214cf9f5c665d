"""What a plug-in declares on :class:`MetaAlgorithm` decides what validation refuses, for every registered
algorithm and for one defined here (a future plug-in gets the refusals without a line of validation)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import ClassVar

import pytest
import torch
from torch import nn

from metacompare import models
from metacompare.algorithms import ALGORITHMS
from metacompare.algorithms.base import DELTA, MetaAlgorithm, Objective, linear_head
from metacompare.config.loading import ConfigError, RunConfig, expand, with_overrides
from metacompare.config.validation import CHOICES, NO_BATCHNORM2D, OPTIONAL_FIELDS
from tests.faults import sine_config

FIELDS = {f.name for f in dataclasses.fields(RunConfig)}


def test_every_declared_capability_has_its_declared_type():
    """Each capability is a ClassVar of the interface with a default, and each plug-in's value has its type."""
    declared = {n for n, kind in MetaAlgorithm.__annotations__.items() if str(kind).startswith("ClassVar")}
    assert {"uses", "requires", "needs_query", "first_order", "uses_num_classes", "compilable", "mamlpp_preset",
            "config_defaults", "work_rule", "backends"} <= declared
    kinds = {"uses": frozenset, "requires": Mapping, "config_defaults": Mapping, "needs_query": bool,
             "first_order": bool, "uses_num_classes": bool, "compilable": bool, "work_rule": str, "backends": tuple}
    for name, cls in ALGORITHMS.items():
        for capability, kind in kinds.items():
            assert isinstance(getattr(cls, capability), kind), (name, capability)
        assert set(cls.requires) | set(cls.config_defaults) <= FIELDS, name
        assert bool(cls.requires) == bool(cls.requires_why), name
        # distributed.refusal reads per-step running statistics from the config's own mamlpp section
        assert cls.mamlpp_preset is None or not cls.mamlpp_preset.per_step_bn_statistics, name


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_a_field_an_algorithm_requires_at_one_value_is_refused_at_any_other(name):
    cls = ALGORITHMS[name]
    for field, wanted in cls.requires.items():
        other = next(v for v in (*CHOICES.get(field, ()), 1, 2) if v != wanted)
        with pytest.raises(ConfigError, match=f"^config: {field}: {re.escape(name)} .*; set {field}: "):
            expand(sine_config(algorithm=name, **{field: other}))


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_query_zero_is_refused_exactly_where_training_scores_a_query_set(name):
    raw = sine_config(algorithm=name, query=0, test_query=5)
    if ALGORITHMS[name].needs_query:
        with pytest.raises(ConfigError, match=f"query: must be a positive whole number for {re.escape(name)}"):
            expand(raw)
    else:
        assert expand(raw)[0].query == 0


@pytest.mark.parametrize("name", ["reptile", "anil"])
def test_task_chunk_is_refused_for_algorithms_that_do_not_chunk(name):
    """Neither reads ``task_chunk`` (Reptile's batched form runs whole; ANIL has none): refused, with or
    without the ``batch_tasks`` it is read under."""
    assert "task_chunk" not in ALGORITHMS[name].uses
    readers = ", ".join(sorted(n for n, c in ALGORITHMS.items() if "task_chunk" in c.uses))
    raw = sine_config(algorithm=name, task_chunk=2, **({"batch_tasks": True} if name == "reptile" else {}))
    with pytest.raises(ConfigError, match=f"task_chunk: {name} ignores it, so 2 would be recorded but not used "
                                          f"\\(only {re.escape(readers)} reads it\\)"):
        expand(raw)


class Toy(MetaAlgorithm):
    """A plug-in validation has never heard of: it declares what it reads and nothing else."""

    name = "toy"
    uses: ClassVar[frozenset[str]] = frozenset({"batch_tasks"})
    requires = {"inner_loss": "mean"}
    requires_why = "sums nothing"
    needs_query = False
    config_defaults = {"outer_lr_schedule": "cosine"}

    def task_objective(self, net, params, task) -> Objective:
        return Objective(params, None, task.query_x, task.query_y)  # no adaptation

    def gradient_rule(self) -> str:
        return DELTA  # θ − θ̃ = 0


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(ALGORITHMS, "toy", Toy)
    return Toy


@pytest.mark.parametrize("field", OPTIONAL_FIELDS)
def test_a_new_algorithm_gets_the_no_effect_refusal_from_its_declarations(toy, field):
    samples = {"inner_state": {"inner_optimizer": "adam", "inner_state": "carry"},
               "inner_chains": {"inner_optimizer": "adam", "inner_state": "carry", "inner_chains": 2},
               "mamlpp": {"mamlpp": {"multi_step_loss": True}}, "batch_tasks": {"batch_tasks": True},
               "task_chunk": {"batch_tasks": True, "task_chunk": 2}, "vmap": {"vmap": True}}
    raw = sine_config(algorithm="toy", **samples[field])
    unread = [f for f in OPTIONAL_FIELDS if f in samples[field] and f not in toy.uses]  # inner_chains: also inner_state
    if not unread:
        assert getattr(expand(raw)[0], field) == samples[field][field]
    else:
        with pytest.raises(ConfigError, match=f"{unread[0]}: toy ignores it, .*only .* reads it"):
            expand(raw)


def test_a_new_algorithm_gets_its_other_declarations_enforced(toy):
    with pytest.raises(ConfigError, match="inner_loss: toy sums nothing; set inner_loss: mean \\(got 'sum'\\)"):
        expand(sine_config(algorithm="toy", inner_loss="sum"))
    cfg = expand(sine_config(algorithm="toy", query=0, test_query=5))[0]
    assert (cfg.query, cfg.outer_lr_schedule) == (0, "cosine")  # no query set needed; its own default applied
    assert expand(sine_config(algorithm="maml"))[0].outer_lr_schedule == "linear"


def networks():
    """Every network a config can name, built on the meta device (shapes only) for 28x28 grey images."""
    base = RunConfig()
    for name in CHOICES["model"]:
        cfg = dataclasses.replace(base, model=name, ways=2, filters=2,
                                  resnet12=dataclasses.replace(base.resnet12, widths=(1, 1, 1, 1)))
        with torch.device("meta"):
            yield name, models._network(cfg, (1, 28, 28))


def test_every_configurable_network_has_the_parts_algorithms_rely_on():
    """ANIL and pretrain take the final linear layer (no config can name a network without one), and
    validation's NO_BATCHNORM2D names exactly the networks that have no BatchNorm2d for MAML++'s per-step
    tensors."""
    for name, network in networks():
        assert isinstance(linear_head(network, "anil"), nn.Linear), name
        has_norm = any(isinstance(m, nn.BatchNorm2d) for m in network.modules())
        assert has_norm == (name not in NO_BATCHNORM2D), name
    with pytest.raises(TypeError, match="anil needs an nn.Sequential ending in an nn.Linear"):
        linear_head(nn.Sequential(nn.Linear(1, 4), nn.ReLU()), "anil")


@pytest.mark.parametrize("model", NO_BATCHNORM2D)
def test_per_step_batchnorm_on_a_network_without_batchnorm_is_refused_before_building(model):
    dataset = {"mlp": "sine", "metamodel": "digits", "conv4_finn": "omniglot", "bag_of_embeddings": "text"}[model]
    with pytest.raises(ConfigError, match=f"mamlpp.per_step_bn_weights: model {model} has no BatchNorm2d"):
        with_overrides(RunConfig(), algorithm="maml", dataset=dataset, model=model, ways=1 if model == "mlp" else 5,
                       mamlpp={"per_step_bn_weights": True})


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_compile_is_refused_exactly_for_algorithms_that_declare_no_compiled_step(name):
    raw = sine_config(algorithm=name, compile=True)
    if ALGORITHMS[name].compilable:
        try:
            assert expand(raw)[0].compile
        except ConfigError as err:  # e.g. no C++ compiler here: refused, but not for want of a compiled step
            assert "has no compiled step" not in str(err)
    else:  # maml++ is refused first for its preset's options, which have no compiled form
        compilable = ", ".join(sorted(n for n, c in ALGORITHMS.items() if c.compilable))
        with pytest.raises(ConfigError, match=f"compile: ({re.escape(name)} has no compiled step \\(only "
                                              f"{compilable} have\\)|true has no MAML\\+\\+ form)"):
            expand(raw)
