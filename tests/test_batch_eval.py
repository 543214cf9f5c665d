"""Batched evaluation (``eval_batch``) scores every episode as the looped evaluation does.

Reptile's own procedure (Nichol et al. 2018: Adam with beta1 0, started from the carried training
state, mini-batches smaller than the support set, transductive BatchNorm) and SGD procedures (the
MAML family's own, a common one), on a tiny conv4_nichol / conv4_finn with Omniglot-sized 28x28
inputs. float64: losses within 1e-10 (measured ~1e-15: only the grouped kernels' summation order
differs), accuracies equal. float32: accuracies equal, losses within 1e-5 (measured ~2e-7).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from metacompare.engines import batch_eval

from metacompare.algorithms import inner

from metacompare.training import scoring
from metacompare.algorithms import build_algorithm
from metacompare.config.loading import ConfigError, RunConfig, with_overrides
from metacompare.errors import UserError
from metacompare.models import conv4_finn, conv4_nichol
from metacompare.config.runconfig import EvalProcedure
from tests.conftest import make_task

WAYS, SHOTS, QUERY, SIZE, EPISODES = 3, 3, 2, 28, 7
CPU = torch.device("cpu")

REPTILE = dict(algorithm="reptile", model="conv4_nichol", inner_optimizer="adam", inner_betas=(0.0, 0.999),
               inner_state="carry", inner_lr=0.001, inner_steps=3, inner_batch_size=4, inner_loss="sum",
               outer_optimizer="sgd", outer_lr=1.0, eval_inner_steps=10, eval_inner_batch_size=4)
FOMAML = dict(algorithm="fomaml", model="conv4_finn", inner_lr=0.4, inner_steps=1, inner_loss="sum_over_shots",
              eval_inner_steps=3)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread, as every run has (runner.pin_threads): these tiny kernels are overhead-bound, and
    two threads on a loaded machine cost many times the work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def config(**fields) -> RunConfig:
    base = dict(dataset="omniglot", ways=WAYS, shots=SHOTS, query=QUERY, meta_batch_size=2)
    return RunConfig(**{**base, **fields})


def trained(cfg: RunConfig, dtype: torch.dtype, engine=None):
    """The algorithm after 3 outer steps, so θ and (Reptile) the carried Adam state are not initial
    (``engine``: the meta-batch engine, e.g. the looped one in each process of a distributed test)."""
    torch.manual_seed(0)
    build = conv4_nichol if cfg.model == "conv4_nichol" else conv4_finn
    algorithm = build_algorithm(build(WAYS, filters=4, image_size=SIZE).to(dtype), cfg)
    for i in range(3):
        algorithm.meta_train_step([make_task(WAYS, SHOTS, QUERY, SIZE, seed=10 + 2 * i + j, dtype=dtype)
                                   for j in range(2)], engine)
    return algorithm


def episodes(dtype: torch.dtype) -> list:
    return [make_task(WAYS, SHOTS, QUERY, SIZE, seed=100 + i, dtype=dtype) for i in range(EPISODES)]


def scores(algorithm, dtype, eval_batch: int, steps: int = 10, procedure=None) -> list:
    """Per-episode (loss, accuracy) of :func:`episodes` through :func:`scoring.evaluate` (split over the
    ranks of a distributed run)."""
    algorithm.cfg = dataclasses.replace(algorithm.cfg, eval_batch=eval_batch)
    rows: list = []
    scoring.evaluate(algorithm, episodes(dtype), steps, CPU, dtype, procedure, rows)
    return rows


def assert_same(looped, batched, tolerance):
    assert len(looped) == len(batched) == EPISODES
    assert [acc for _, acc in batched] == [acc for _, acc in looped]
    assert max(abs(a - b) for (a, _), (b, _) in zip(looped, batched)) <= tolerance
    assert len({loss for loss, _ in looped}) == EPISODES, "degenerate test: episodes score alike"


CASES = {"reptile-adam-carried": (REPTILE, None, 10),
         "reptile-non-transductive": ({**REPTILE, "evaluation": "non_transductive"}, None, 10),
         "reptile-common-sgd": (REPTILE, EvalProcedure("sgd", 0.1, 4, batch_size=5), 4),
         "fomaml-sgd": (FOMAML, None, 3),
         "fomaml-common-adam-minibatch": (FOMAML, EvalProcedure("adam", 0.01, 5, batch_size=4), 5)}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["float64", "float32"])
@pytest.mark.parametrize("eval_batch", [3, 7])
def test_batched_evaluation_is_the_looped_evaluation(case, dtype, tolerance, eval_batch):
    fields, procedure, steps = CASES[case]
    algorithm = trained(config(**fields), dtype)
    carried = algorithm.inner_state.to_dict() if algorithm.inner_state is not None else None
    looped = scores(algorithm, dtype, 0, steps, procedure)
    batched = scores(algorithm, dtype, eval_batch, steps, procedure)
    assert_same(looped, batched, tolerance)
    if carried is not None:  # evaluation leaves the carried training state as it was
        assert algorithm.inner_state.step == carried["step"] > 0
        assert all(torch.equal(algorithm.inner_state.m[k], carried["m"][k]) for k in carried["m"])


def test_each_episode_keeps_its_own_mini_batch_order():
    """The check above can see an order mix-up: one shared order for all episodes changes the scores."""
    algorithm = trained(config(**REPTILE), torch.float64)
    tasks = episodes(torch.float64)
    own = [torch.Generator().manual_seed(i) for i in range(EPISODES)]
    shared = [torch.Generator().manual_seed(0) for _ in range(EPISODES)]
    right = batch_eval.evaluate_stack(algorithm, tasks, 10, None, own)
    wrong = batch_eval.evaluate_stack(algorithm, tasks, 10, None, shared)
    looped = [algorithm.evaluate(t, 10, None, torch.Generator().manual_seed(i)) for i, t in enumerate(tasks)]
    assert max(abs(a[0] - b[0]) for a, b in zip(right, looped)) <= 1e-10
    assert max(abs(a[0] - b[0]) for a, b in zip(wrong, looped)) > 1e-6


def test_per_task_orders_are_each_generators_own():
    loop = inner.InnerLoop(inner.SGD(0.1), steps=5, batch_size=4)
    stacked = list(inner._orders(9, loop, [torch.Generator().manual_seed(i) for i in range(3)]))
    for t in range(3):
        alone = list(inner.mini_batches(9, 4, 5, torch.Generator().manual_seed(t)))
        assert all(torch.equal(s[t], a) for s, a in zip(stacked, alone))
    assert [s.shape for s in stacked] == [torch.Size([3, 4])] * 5


def test_plug_ins_that_adapt_their_own_way_are_evaluated_one_at_a_time():
    cfg = config(algorithm="anil", model="conv4", eval_batch=4, eval_inner_steps=2)
    torch.manual_seed(0)
    from metacompare.models import conv4
    algorithm = build_algorithm(conv4(WAYS, filters=4, image_size=SIZE).double(), cfg)
    assert batch_eval.stacked_scores(algorithm, episodes(torch.float64)[:2], 2) is None
    assert len(scores(algorithm, torch.float64, 4, steps=2)) == EPISODES  # the looped evaluation instead


def test_a_model_that_cannot_be_grouped_names_eval_batch():
    cfg = config(**FOMAML, eval_batch=2)
    algorithm = trained(cfg, torch.float64)
    algorithm.model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(SIZE * SIZE, WAYS), torch.nn.Tanh()).double()
    with pytest.raises(UserError, match=r"eval_batch: no grouped version of Tanh; set eval_batch: 0"):
        batch_eval.evaluate_stack(algorithm, episodes(torch.float64)[:2], 1, None, None)


def test_eval_batch_is_not_part_of_the_run_id_and_is_validated():
    cfg = config(**REPTILE)
    assert with_overrides(cfg, eval_batch=50).run_id() == cfg.run_id()
    assert "eval_batch" not in cfg.identity()
    with pytest.raises(ConfigError, match="eval_batch: must be 0 or a positive whole number"):
        with_overrides(cfg, eval_batch=-1)


def test_a_run_with_eval_batch_scores_what_the_looped_run_scores(tmp_path):
    """End to end (runner): Reptile with carried Adam and mini-batches at test time, float64; validation
    and test, trained and floor, per episode."""
    import pandas

    from metacompare.training import runner
    from tests.faults import sine_config

    fields = sine_config(algorithm="reptile", inner_optimizer="adam", inner_betas=(0.0, 0.999), inner_state="carry",
                         inner_batch_size=3, inner_steps=3, eval_inner_batch_size=3, eval_inner_steps=4,
                         test_episodes=5, precision="float64")
    runs = {}
    for chunk in (0, 2):
        cfg = RunConfig(**{**fields, "results_dir": str(tmp_path / str(chunk)), "eval_batch": chunk})
        runner.train_and_evaluate(cfg, progress=False)
        runs[chunk] = runner.run_dir(cfg)
    assert runs[0].name == runs[2].name  # one run id
    for name in ("episodes.csv", "metrics.csv"):
        looped, batched = pandas.read_csv(runs[0] / name), pandas.read_csv(runs[2] / name)
        losses = [c for c in looped.columns if "loss" in c and "ci95" not in c]
        assert losses and len(looped) > 1
        assert (looped[losses] - batched[losses]).abs().max().max() <= 1e-10
