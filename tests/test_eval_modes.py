"""Transductive vs non-transductive evaluation: what each query prediction is allowed to depend on."""

from __future__ import annotations

import pytest
import torch

from metacompare.algorithms import build_algorithm
from metacompare.algorithms.base import predict_query
from metacompare.config.loading import ConfigError, RunConfig, expand
from metacompare.models import conv4, mlp
from tests.conftest import make_sine_task, make_task


def conv_algorithm(algorithm: str, evaluation: str, seed: int = 0):
    torch.manual_seed(seed)
    model = conv4(ways=3, filters=4, image_size=16).double()
    cfg = RunConfig(algorithm=algorithm, dataset="omniglot", model="conv4", ways=3, shots=2, query=3,
                    inner_lr=0.1, inner_steps=1, evaluation=evaluation)
    return build_algorithm(model, cfg)


def query_outputs(algo, task, steps=2):
    predict = algo.adapt(task, steps)
    with torch.no_grad():
        return predict_query(predict, task.support_x, task.query_x, algo.cfg.evaluation)


def with_query_changed(task, keep: int):
    """The same task with every query image but number ``keep`` replaced by noise."""
    changed = task.query_x.clone()
    others = [i for i in range(len(changed)) if i != keep]
    changed[others] = torch.rand(changed[others].shape, generator=torch.Generator().manual_seed(9),
                                 dtype=changed.dtype)
    return type(task)(task.support_x, task.support_y, changed, task.query_y)


@pytest.mark.parametrize("algorithm", ["maml", "reptile", "anil", "metasgd"])
def test_non_transductive_prediction_ignores_the_other_query_examples(algorithm):
    task = make_task(seed=2)
    algo = conv_algorithm(algorithm, "non_transductive")
    before, after = query_outputs(algo, task), query_outputs(algo, with_query_changed(task, keep=4))
    torch.testing.assert_close(before[4], after[4], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(before[0], after[0])


@pytest.mark.parametrize("algorithm", ["maml", "reptile"])
def test_transductive_prediction_uses_the_query_batch_statistics(algorithm):
    """BatchNorm normalises with the query batch, so changing other examples changes this one's output."""
    task = make_task(seed=2)
    algo = conv_algorithm(algorithm, "transductive")
    before, after = query_outputs(algo, task), query_outputs(algo, with_query_changed(task, keep=4))
    assert (before[4] - after[4]).abs().max() > 1e-3


def test_non_transductive_is_the_support_set_plus_one_example():
    task = make_task(seed=3)
    algo = conv_algorithm("maml", "non_transductive")
    predict = algo.adapt(task, 2)
    with torch.no_grad():
        got = predict_query(predict, task.support_x, task.query_x, "non_transductive")
        for i, q in enumerate(task.query_x):
            expected = predict(torch.cat([task.support_x, q[None]]))[-1]
            torch.testing.assert_close(got[i], expected, rtol=0, atol=0)


def test_modes_agree_without_batchnorm_and_differ_with_it():
    torch.manual_seed(0)
    sine = make_sine_task(seed=1)
    scores = {}
    for mode in ("transductive", "non_transductive"):
        torch.manual_seed(0)
        algo = build_algorithm(mlp(hidden=(8,)).double(), RunConfig(algorithm="maml", evaluation=mode))
        scores[mode] = algo.evaluate(sine, 3)
    assert scores["transductive"][0] == pytest.approx(scores["non_transductive"][0], rel=1e-12)
    task = make_task(seed=4)
    conv_losses = {mode: conv_algorithm("maml", mode).evaluate(task, 2)[0] for mode in scores}
    assert abs(conv_losses["transductive"] - conv_losses["non_transductive"]) > 1e-4


def test_evaluation_mode_is_a_validated_config_field_recorded_with_the_run():
    cfg = expand({"evaluation": "non_transductive"})[0]
    assert cfg.evaluation == "non_transductive"
    assert cfg.to_dict()["evaluation"] == "non_transductive"
    assert cfg.run_id() != expand({})[0].run_id()
    assert RunConfig().evaluation == "transductive"
    with pytest.raises(ConfigError, match="evaluation: unknown 'inductive'"):
        expand({"evaluation": "inductive"})


def test_a_run_records_its_evaluation_mode(tmp_path):
    import yaml

    from metacompare.storage import results
    from metacompare.training.runner import run_dir, train_and_evaluate

    cfg = expand(dict(experiment="modes", evaluation="non_transductive", iterations=1, eval_interval=1,
                      meta_batch_size=2, eval_episodes=2, test_episodes=2, eval_inner_steps=1,
                      results_dir=str(tmp_path)))[0]
    summary = train_and_evaluate(cfg, progress=False)
    assert summary["evaluation"] == "non_transductive"
    assert yaml.safe_load((run_dir(cfg) / "config.yaml").read_text())["evaluation"] == "non_transductive"
    (row,) = results.read_csv(tmp_path / "modes" / "runs.csv")
    assert row["evaluation"] == "non_transductive"
