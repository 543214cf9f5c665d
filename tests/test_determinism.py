"""Same config and seed on CPU give identical metrics, run to run; another seed does not."""

from __future__ import annotations

import pytest

from metacompare.config.loading import load_experiment
from tests.faults import (cli, final_metrics, omniglot_config, omniglot_zip, one_torch_thread, sine_config,
                          write_config)


one_thread = pytest.fixture(autouse=True)(one_torch_thread)


def run_twice(tmp_path, capsys, cfg: dict) -> tuple:
    """Run ``cfg`` into two fresh results folders; return both (metrics rows, test scores)."""
    config = write_config(tmp_path / "cfg.yaml", cfg)
    outcomes = []
    for name in ("first", "second"):
        code, _, err = cli(capsys, "run", config, "--results-dir", tmp_path / name, "--no-progress", "--no-report")
        assert code == 0, err
        run = load_experiment(config)[0]
        outcomes.append(final_metrics(tmp_path / name / run.experiment / run.run_id()))
    return tuple(outcomes)


@pytest.mark.parametrize("algorithm", ["reptile", "fomaml", "maml"])
def test_sine_runs_repeat_bitwise(algorithm, tmp_path, capsys):
    cfg = sine_config(algorithm=algorithm, iterations=8, eval_interval=4, inner_steps=2, seed=11)
    first, second = run_twice(tmp_path, capsys, cfg)
    assert first == second  # every metrics.csv value (but wall time) and the test scores, exactly
    assert len(first[0]) == 2 and first[1]["status"] == "finished"


def test_omniglot_runs_repeat_bitwise(tmp_path, capsys):
    """Classification adds sampled classes and label permutations; they must repeat too."""
    root = tmp_path / "data"
    omniglot_zip(root / "images_background_small1.zip")
    first, second = run_twice(tmp_path, capsys, omniglot_config(root, iterations=3, seed=5))
    assert first == second
    assert 0.0 <= first[1]["test_accuracy_mean"] <= 1.0


def test_another_seed_gives_other_metrics(tmp_path, capsys):
    """The comparison above can fail: changing only the seed changes the numbers."""
    a = run_twice(tmp_path / "a", capsys, sine_config(seed=1))[0]
    b = run_twice(tmp_path / "b", capsys, sine_config(seed=2))[0]
    assert a[1]["test_loss_mean"] != b[1]["test_loss_mean"]
    assert [r["train_loss"] for r in a[0]] != [r["train_loss"] for r in b[0]]
