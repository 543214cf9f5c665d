"""Config files become validated RunConfig objects; overrides and per-algorithm sections apply."""

from __future__ import annotations

from pathlib import Path

import pytest

from metacompare.config.loading import ConfigError, RunConfig, expand, load_experiment, with_overrides

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["sine.yaml", "omniglot_minimal.yaml", "omniglot.yaml"])
def test_shipped_configs_load_one_run_per_algorithm(name):
    configs = load_experiment(CONFIGS / name)
    assert [c.algorithm for c in configs] == ["reptile", "fomaml", "maml"]
    assert len({c.experiment for c in configs}) == 1


def test_per_algorithm_fields_apply_to_that_algorithm_only():
    reptile, fomaml, maml = load_experiment(CONFIGS / "sine.yaml")
    assert reptile.inner_steps == 5 and reptile.outer_optimizer == "sgd"
    assert fomaml.inner_steps == maml.inner_steps == 1 and maml.outer_optimizer == "adam"


def test_set_overrides_every_run_and_nested_fields():
    configs = load_experiment(CONFIGS / "omniglot_minimal.yaml",
                              ["inner_lr=0.2", "omniglot.rotations=false", "algorithm=maml"])
    assert len(configs) == 1
    assert configs[0].inner_lr == 0.2 and configs[0].omniglot.rotations is False


def test_ints_are_accepted_for_floats_but_not_the_reverse():
    cfg = expand({"inner_lr": 1, "iterations": 10.0})[0]
    assert cfg.inner_lr == 1.0 and isinstance(cfg.inner_lr, float) and cfg.iterations == 10
    with pytest.raises(ConfigError, match="iterations: expected a whole number"):
        expand({"iterations": 10.5})


def test_unknown_field_suggests_the_closest_name():
    with pytest.raises(ConfigError, match="unknown field 'inner_lrr'.*did you mean 'inner_lr'"):
        expand({"inner_lrr": 0.1})


def test_run_id_is_stable_and_ignores_where_results_go():
    a = RunConfig(algorithm="maml")
    assert a.run_id() == RunConfig(algorithm="maml").run_id()
    assert a.run_id() == with_overrides(a, results_dir="/elsewhere").run_id()
    assert a.run_id() != with_overrides(a, seed=1).run_id()
    assert a.run_id().startswith("maml-")


def test_bfloat16_multi_step_maml_warns_but_one_step_does_not(recwarn):
    expand({"algorithm": "maml", "precision": "bfloat16", "inner_steps": 1})
    assert not [w for w in recwarn if "bfloat16" in str(w.message)]
    with pytest.warns(UserWarning, match="precision: bfloat16 with maml and inner_steps=5"):
        expand({"algorithm": "maml", "precision": "bfloat16", "inner_steps": 5})


def test_numbers_written_in_e_notation_without_a_dot_are_numbers(tmp_path):
    """YAML 1.1 (PyYAML) reads ``1e5`` and ``1e-3`` as text; they are what the user meant, a whole
    number where one is expected when it is whole, and refused (naming the field) when it is not."""
    path = tmp_path / "cfg.yaml"
    path.write_text("dataset: sine\nmodel: mlp\nalgorithm: maml\niterations: 1e5\ninner_lr: 1e-3\n")
    cfg, = load_experiment(path)
    assert (cfg.iterations, cfg.inner_lr) == (100_000, 0.001)
    with pytest.raises(ConfigError, match="iterations: expected a whole number, got '1e-3'"):
        expand({"dataset": "sine", "model": "mlp", "algorithm": "maml", "iterations": "1e-3"})
