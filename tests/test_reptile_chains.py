"""Reptile with ``inner_chains``: independent carried Adam chains, each over its share of the meta-batch.

The reference is written out here from supervised-reptile's train step (tests/test_protocols.py's TF
Adam and mini-batches): C chains, each with its own Adam slots, chain ``c`` training the ``c``-th
contiguous share of every meta-batch, the new variables averaged over the whole meta-batch. float64
throughout; 1e-10 where only the summation order can differ.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import signal
from pathlib import Path

import pandas
import pytest
import torch
import torch.nn.functional as F

from metacompare.engines import distributed

from metacompare.training import runner
from metacompare.algorithms import build_algorithm
from metacompare.engines import chains
from metacompare.config.loading import ConfigError, RunConfig
from metacompare.config.validation import validate
from tests.conftest import make_task
from tests.faults import final_metrics, sine_config
from tests.test_protocols import reptile_mini_batches, tf_adam_step, tiny_net

LR, STEPS, BATCH, ITERATIONS, META_BATCH = 0.01, 4, 5, 3, 5


def config(**changes) -> RunConfig:
    fields = dict(algorithm="reptile", dataset="omniglot", model="conv4", ways=3, shots=1, train_shots=6, query=0,
                  inner_optimizer="adam", inner_betas=(0.0, 0.999), inner_state="carry", inner_lr=LR,
                  inner_steps=STEPS, inner_batch_size=BATCH, inner_loss="sum", meta_batch_size=META_BATCH, test_query=2,
                  outer_optimizer="sgd", outer_lr=1.0, iterations=ITERATIONS, precision="float64")
    return RunConfig(**{**fields, **changes})


def meta_batches() -> list[list]:
    return [[make_task(ways=3, shots=6, query=0, size=16, seed=10 * i + j) for j in range(META_BATCH)]
            for i in range(ITERATIONS)]


def trained(cfg: RunConfig, engine=None):
    algorithm = build_algorithm(tiny_net(), cfg)
    torch.manual_seed(7)
    for batch in meta_batches():
        algorithm.meta_train_step(batch, engine)
    return algorithm


def reference(count: int, shared_round_shuffles: bool = False) -> tuple[list[torch.Tensor], list[int]]:
    """``count`` chains of TF Adam over their shares; θ ← θ + mean(θ̃ − θ) (meta-step 1). With
    ``shared_round_shuffles`` the k-th tasks of all chains train on one mini-batch sequence, drawn once
    per round k (the batched engine's stream); else each task draws its own, in meta-batch order."""
    model = tiny_net()
    params = list(model.parameters())
    slots = [{"t": 0, "m": [torch.zeros_like(p) for p in params], "v": [torch.zeros_like(p) for p in params]}
             for _ in range(count)]
    shares = [distributed.bounds(META_BATCH, c, count) for c in range(count)]

    def train(x, y, slot, batches):
        old = [p.detach().clone() for p in params]
        for batch in batches:
            loss = F.cross_entropy(model(x[batch]), y[batch], reduction="none").sum()
            tf_adam_step(params, torch.autograd.grad(loss, params), slot, LR, 0.0, 0.999)
        new = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, o in zip(params, old):
                p.copy_(o)
        return new

    torch.manual_seed(7)
    for tasks in meta_batches():
        new = [None] * META_BATCH
        if shared_round_shuffles:
            for k in range(shares[0][1] - shares[0][0]):
                batches = reptile_mini_batches(18, BATCH, STEPS)
                for c, (begin, end) in enumerate(shares):
                    if begin + k < end:
                        new[begin + k] = train(tasks[begin + k].all_x, tasks[begin + k].all_y, slots[c], batches)
        else:
            for c, (begin, end) in enumerate(shares):
                for j in range(begin, end):
                    new[j] = train(tasks[j].all_x, tasks[j].all_y, slots[c], reptile_mini_batches(18, BATCH, STEPS))
        with torch.no_grad():
            for i, p in enumerate(params):
                p.add_(sum(n[i] for n in new) / META_BATCH - p)
    return [p.detach() for p in params], [slot["t"] for slot in slots]


def assert_theta(algorithm, expected: list[torch.Tensor]) -> None:
    start = [p.detach() for p in tiny_net().parameters()]
    assert max((p - q).abs().max().item() for p, q in zip(expected, start)) > 1e-3  # not vacuous
    for p, q in zip(algorithm.model.parameters(), expected):
        torch.testing.assert_close(p.detach(), q, rtol=0, atol=1e-10)


@pytest.mark.parametrize("count", [2, 5])
def test_chains_are_independent_serial_chains_over_their_shares(count):
    algorithm = trained(config(inner_chains=count))
    expected, steps = reference(count)
    assert_theta(algorithm, expected)
    assert [s.step for s in algorithm.chains] == steps  # 5 tasks over 2 chains: 3 + 2 per iteration
    assert algorithm.inner_state is algorithm.chains[0]  # test-time adaptation starts from chain 0


@pytest.mark.parametrize("count", [2, 3, 5])
def test_batched_chains_are_the_chains_with_one_shuffle_per_round(count):
    """Rounds of grouped networks (with 2 or 3 chains, chains at different step counts in separate
    stacks of one round) equal the chains trained one task at a time on the round's shuffles."""
    algorithm = trained(config(inner_chains=count, batch_tasks=True))
    expected, steps = reference(count, shared_round_shuffles=True)
    assert_theta(algorithm, expected)
    assert [s.step for s in algorithm.chains] == steps


def test_one_chain_is_the_serial_carry_exactly():
    """The chains' engine with one chain computes supervised-reptile's serial chain, bit for bit."""
    serial = trained(config())
    one = trained(config(), engine=chains.chained_gradient)
    for p, q in zip(serial.model.parameters(), one.model.parameters()):
        assert torch.equal(p, q)
    assert one.inner_state.step == serial.inner_state.step == ITERATIONS * META_BATCH * STEPS
    for k in serial.inner_state.v:
        assert torch.equal(serial.inner_state.v[k], one.chains[0].v[k])
    expected, _ = reference(1)
    assert_theta(serial, expected)


def test_chains_state_round_trips_and_evaluation_leaves_it_alone():
    cfg = config(inner_chains=2)
    algorithm = trained(cfg)
    state = copy.deepcopy(algorithm.state_dict())
    assert [c["step"] for c in state["inner_chains"]] == [36, 24]
    loaded = build_algorithm(tiny_net(), cfg)
    loaded.load_state_dict(state)
    extra = [make_task(ways=3, shots=6, query=0, size=16, seed=99 + j) for j in range(META_BATCH)]
    algorithm.evaluate(make_task(ways=3, shots=2, query=2, seed=5), 3)
    torch.manual_seed(11)
    algorithm.meta_train_step(extra)
    torch.manual_seed(11)
    loaded.meta_train_step(extra)
    for p, q in zip(algorithm.model.parameters(), loaded.model.parameters()):
        assert torch.equal(p, q)
    for a, b in zip(algorithm.chains, loaded.chains):
        assert a.step == b.step and all(torch.equal(a.v[k], b.v[k]) for k in a.v)


def test_the_serial_config_keeps_its_run_id():
    cfg = config()
    assert "inner_chains" not in cfg.identity()
    assert config(inner_chains=2).run_id() != cfg.run_id()


@pytest.mark.parametrize("changes, message", [
    ({"inner_chains": 2, "inner_state": "reset"}, "inner_chains: 2 chains of a carried inner state"),
    ({"inner_chains": 6}, "inner_chains: 6 chains cannot share meta_batch_size: 5"),
    ({"inner_chains": 0}, "inner_chains: must be a positive whole number"),
    ({"inner_chains": 2, "algorithm": "fomaml", "query": 1, "inner_state": "reset"}, "inner_chains"),
])
def test_bad_chain_counts_are_refused(changes, message):
    validate(config(inner_chains=5))
    with pytest.raises(ConfigError, match=message):
        validate(config(**changes))


def test_processes_may_take_whole_chains_only():
    assert distributed.refusal(config(inner_chains=2), 2) is None
    assert distributed.refusal(config(inner_chains=5), 3) is None
    assert "set inner_chains: 2" in distributed.refusal(config(), 2)
    assert "set inner_chains: 3" in distributed.refusal(config(inner_chains=2), 3)


def test_a_stopped_run_with_chains_resumes_exactly(tmp_path):
    """SIGTERM at the first validation checkpoints the chains; the rerun ends with the uninterrupted numbers."""
    fields = sine_config(algorithm="reptile", inner_optimizer="adam", inner_state="carry", inner_chains=2,
                         inner_batch_size=3, inner_steps=3, meta_batch_size=3, iterations=12, eval_interval=4,
                         checkpoint_interval=100, precision="float64")
    whole = runner.train_and_evaluate(RunConfig(**{**fields, "results_dir": str(tmp_path / "a")}), progress=False)
    cfg = RunConfig(**{**fields, "results_dir": str(tmp_path / "b")})
    with pytest.raises(KeyboardInterrupt):
        runner.train_and_evaluate(cfg, progress=False, on_validation=lambda i, s: os.kill(os.getpid(), signal.SIGTERM))
    stopped = torch.load(runner.run_dir(cfg) / "checkpoint.pt", weights_only=True)
    assert stopped["iteration"] == 4 and len(stopped["algorithm"]["inner_chains"]) == 2
    again = runner.train_and_evaluate(cfg, progress=False)
    assert again["test_loss_mean"] == whole["test_loss_mean"]
    ours, theirs = runner.run_dir(cfg), Path(whole["config"]["results_dir"]) / "tiny" / whole["run_id"]
    assert final_metrics(ours) == final_metrics(theirs)
    assert pandas.read_csv(ours / "episodes.csv").equals(pandas.read_csv(theirs / "episodes.csv"))


def test_the_seeded_study_gives_every_algorithm_two_processes():
    """experiments/compare_omniglot_minimal_seeds.yaml under `compare --procs 2`: no algorithm is refused
    the second process (Reptile by its 2 chains); the machine study with Reptile's chains likewise."""
    from metacompare.workflows import tune

    configs, _ = tune.load("experiments/compare_omniglot_minimal_seeds.yaml", ())
    assert sorted(c.algorithm for c in configs) == ["fomaml", "maml", "pretrain", "reptile"]
    assert {c.algorithm: c.inner_chains for c in configs}["reptile"] == 2
    assert [distributed.refusal(c, 2) for c in configs] == [None] * 4
    machine, _ = tune.load("experiments/compare_omniglot_minimal_machine.yaml", ())
    assert [c.algorithm for c in machine if distributed.refusal(c, 2)] == ["reptile"]  # its serial chain
    chained = [validate(dataclasses.replace(c, inner_chains=2)) if c.algorithm == "reptile" else c for c in machine]
    assert [distributed.refusal(c, 2) for c in chained] == [None] * 3
