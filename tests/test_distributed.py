"""Data-parallel meta-batches: two gloo processes give the one-process meta-gradient, scores and run.

The two-process checks share one spawn of two CPU processes (module fixture ``two_ranks``): each rank
computes the meta-gradient of a tiny float64 sine meta-batch of 5 tasks (split 3 + 2) for maml,
fomaml and reptile, scores 7 evaluation episodes (4 + 3; also Reptile's carried-Adam procedure batched in
chunks of 3, ``eval_batch``) and trains a whole 6-iteration run; Reptile
with carried Adam chains (``inner_chains``) takes 3 outer steps and trains a run stopped at its first
validation and resumed; the parent computes the same in one process (and a ResNet-12 MAML step,
tests/test_resnet12.py). float64 tolerance 1e-10: only the
summation order changes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
from pathlib import Path

import numpy
import pandas
import pytest
import torch

from metacompare.engines import distributed

from metacompare.training import runner, scoring
from metacompare.algorithms import ALGORITHMS, build_algorithm
from metacompare.engines.looped import looped_gradient
from metacompare.config.loading import ConfigError, MamlPlusPlusConfig, RunConfig
from metacompare.models import build_model
from metacompare.engines.looped import task_gradient
from tests.conftest import make_sine_task
from tests.test_resnet12 import parallel_step
from tests.faults import final_metrics, kill_group, sine_config, start_run, wait_for, write_config
from tests import test_batch_eval, test_reptile_chains

TOLERANCE = 1e-10
TASKS, EPISODES = 5, 7
CASES = {"maml": {}, "fomaml": {}, "reptile": {},
         # inner mini-batches of 3 out of 10 examples: the shuffles come from torch's global RNG, replayed
         # on the rank that skips a task
         "reptile-minibatch": {"algorithm": "reptile", "inner_batch_size": 3, "inner_steps": 4},
         "maml-minibatch": {"algorithm": "maml", "inner_batch_size": 2},
         "maml-batched": {"algorithm": "maml", "batch_tasks": True},
         "reptile-batched-minibatch": {"algorithm": "reptile", "batch_tasks": True, "inner_batch_size": 3},
         "maml-vmap": {"algorithm": "maml", "vmap": True},
         "reptile-vmap-minibatch": {"algorithm": "reptile", "vmap": True, "inner_batch_size": 3}}


def sine(algorithm: str = "maml", **changes) -> RunConfig:
    fields = dict(algorithm=algorithm, dataset="sine", model="mlp", ways=1, shots=5, query=5, inner_lr=0.05,
                  inner_steps=2, outer_optimizer="sgd", outer_lr=0.1, meta_batch_size=TASKS, precision="float64")
    return RunConfig(**{**fields, **changes})


def meta_step(case: str) -> dict:
    """One outer step on a fixed meta-batch: gradient, loss, new θ and the global RNG state after it."""
    changes = dict(CASES[case])
    cfg = sine(changes.pop("algorithm", case), **changes)
    torch.manual_seed(0)
    algorithm = build_algorithm(build_model(cfg).double(), cfg)
    tasks = [make_sine_task(seed=i) for i in range(TASKS)]
    torch.manual_seed(1)  # the stream of the inner mini-batch shuffles
    metrics = algorithm.meta_train_step(tasks)
    return {"grads": [p.grad.clone() for p in algorithm.meta_parameters()], "loss": metrics["loss"],
            "theta": [p.detach().clone() for p in algorithm.meta_parameters()], "rng": torch.get_rng_state()}


def scores() -> list:
    """Per-episode (loss, accuracy) of 7 episodes, after 2 adaptation steps."""
    cfg = sine()
    torch.manual_seed(0)
    algorithm = build_algorithm(build_model(cfg).double(), cfg)
    episodes, rows = [make_sine_task(seed=100 + i) for i in range(EPISODES)], []
    scoring.evaluate(algorithm, episodes, 2, torch.device("cpu"), torch.float64, per_episode=rows)
    return rows


def batched_eval() -> list:
    """Reptile's carried-Adam evaluation of 7 episodes (4 + 3 over two ranks) in chunks of 3 (eval_batch)."""
    algorithm = test_batch_eval.trained(test_batch_eval.config(**test_batch_eval.REPTILE), torch.float64,
                                        engine=looped_gradient)  # the same θ and state on every rank
    return test_batch_eval.scores(algorithm, torch.float64, eval_batch=3)


def run_config(results: Path) -> RunConfig:
    fields = sine_config(meta_batch_size=3, precision="float64", test_episodes=5, results_dir=str(results))
    return RunConfig(**{k: v for k, v in fields.items()})


# Reptile's carried Adam chains over 2 processes: 2 chains (one each; batched, rank 1 sits out the third
# round), 3 chains (2 + 1) batched, 5 chains (3 + 2)
CHAIN_CASES = {"2": {"inner_chains": 2}, "2-batched": {"inner_chains": 2, "batch_tasks": True},
               "3-batched": {"inner_chains": 3, "batch_tasks": True}, "5": {"inner_chains": 5}}


def chain_steps(case: str) -> dict:
    """Three outer steps of Reptile with chains: θ, every chain's state and the global RNG state after."""
    algorithm = test_reptile_chains.trained(test_reptile_chains.config(**CHAIN_CASES[case]))
    return {"theta": [p.detach().clone() for p in algorithm.meta_parameters()], "rng": torch.get_rng_state(),
            "chains": [s.to_dict() for s in algorithm.chains], "eval": algorithm.inner_state.to_dict()}


def chain_run(results: Path, stop: bool = False, signal_here: bool = False) -> dict:
    """A Reptile run with 2 chains; ``stop``: stopped at the first validation by a SIGTERM to this process
    (``signal_here``) or another rank's (the run checkpoints and stops on every rank), then run again, which
    resumes."""
    fields = sine_config(algorithm="reptile", inner_optimizer="adam", inner_state="carry", inner_chains=2,
                         inner_batch_size=3, inner_steps=3, meta_batch_size=3, iterations=12, eval_interval=4,
                         checkpoint_interval=100, precision="float64", results_dir=str(results))
    cfg = RunConfig(**fields)
    if stop:
        def on_validation(index, scores):
            if signal_here:
                os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(KeyboardInterrupt):
            runner.train_and_evaluate(cfg, progress=False, on_validation=on_validation)
        if distributed.is_writer():  # rank 0 writes it (the other ranks may get here first)
            assert torch.load(runner.run_dir(cfg) / "checkpoint.pt", weights_only=True)["iteration"] == 4
    return runner.train_and_evaluate(cfg, progress=False)


def _rank_main(rank: int, port: int, out: str) -> None:
    """One of the two processes: join the group as torchrun would describe it, then do every check."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    distributed.start("cpu")
    found = {"steps": {case: meta_step(case) for case in CASES}, "scores": scores(), "batched_eval": batched_eval(),
             "resnet12": parallel_step()}
    found["summary"] = runner.train_and_evaluate(run_config(Path(out) / "results"), progress=False)
    found["chains"] = {case: chain_steps(case) for case in CHAIN_CASES}
    found["chain_run"] = chain_run(Path(out) / "chains", stop=True, signal_here=rank == 1)
    torch.save(found, Path(out) / f"rank{rank}.pt")
    distributed.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_ranks(target, out: Path) -> None:
    """``target(rank, port, out)`` in two spawned processes that meet on a free port; both must succeed."""
    context, port = multiprocessing.get_context("spawn"), free_port()
    procs = [context.Process(target=target, args=(rank, port, str(out))) for rank in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(300)
    assert [proc.exitcode for proc in procs] == [0, 0]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> tuple[dict, dict, Path]:
    out = tmp_path_factory.mktemp("two_ranks")
    run_two_ranks(_rank_main, out)
    return torch.load(out / "rank0.pt", weights_only=False), torch.load(out / "rank1.pt", weights_only=False), out


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def test_two_processes_give_the_one_process_resnet12_meta_gradient(two_ranks):
    """ResNet-12 (tests/test_resnet12.py's MAML step on 5 image tasks), looped and task-batched."""
    alone = parallel_step()
    for found in two_ranks[:2]:
        for batch_tasks, (grads, loss) in alone.items():
            assert max(g.abs().max().item() for g in grads) > 1e-3, "degenerate test: the gradient is ~0"
            assert max_diff(found["resnet12"][batch_tasks][0], grads) <= TOLERANCE
            assert found["resnet12"][batch_tasks][1] == pytest.approx(loss, abs=TOLERANCE)


@pytest.mark.parametrize("case", CASES)
def test_two_processes_give_the_one_process_meta_gradient(two_ranks, case):
    alone = meta_step(case)
    assert max(g.abs().max().item() for g in alone["grads"]) > 1e-3, "degenerate test: the gradient is ~0"
    for found in two_ranks[:2]:
        step = found["steps"][case]
        assert max_diff(step["grads"], alone["grads"]) <= TOLERANCE
        assert max_diff(step["theta"], alone["theta"]) <= TOLERANCE  # every replica steps alike
        assert step["loss"] == pytest.approx(alone["loss"], abs=TOLERANCE)
        assert torch.equal(step["rng"], alone["rng"])  # the same random stream afterwards


def test_evaluation_episodes_are_split_and_gathered_in_order(two_ranks):
    alone = scores()
    for found in two_ranks[:2]:
        assert [loss for loss, _ in found["scores"]] == pytest.approx([loss for loss, _ in alone], abs=0)


def test_batched_evaluation_on_two_processes_is_the_looped_one_process_evaluation(two_ranks):
    algorithm = test_batch_eval.trained(test_batch_eval.config(**test_batch_eval.REPTILE), torch.float64)
    alone = test_batch_eval.scores(algorithm, torch.float64, eval_batch=0)
    for found in two_ranks[:2]:
        test_batch_eval.assert_same(alone, found["batched_eval"], TOLERANCE)


def test_a_two_process_run_writes_the_one_process_results_once(two_ranks, tmp_path):
    first, second, out = two_ranks
    assert json.dumps(first["summary"], default=str) == json.dumps(second["summary"], default=str)  # rank 0's
    assert first["summary"]["processes"] == 2
    alone = runner.train_and_evaluate(run_config(tmp_path / "results"), progress=False)
    folder = Path(alone["config"]["results_dir"]) / "tiny" / alone["run_id"]
    theirs = out / "results" / "tiny" / alone["run_id"]
    assert (theirs / "episodes.csv").read_text() == (folder / "episodes.csv").read_text()
    rows, test = final_metrics(theirs)
    expected_rows, expected_test = final_metrics(folder)
    assert test == expected_test
    assert [{k: v for k, v in r.items() if k != "train_cpu_seconds"} for r in rows] == \
        [{k: v for k, v in r.items() if k != "train_cpu_seconds"} for r in expected_rows]
    assert not (theirs / "checkpoint.pt").exists()


@pytest.mark.parametrize("case", CHAIN_CASES)
def test_two_processes_carry_the_one_process_chains(two_ranks, case):
    """Each process carries its own chains; afterwards both hold every chain, as one process does."""
    alone = chain_steps(case)
    for found in two_ranks[:2]:
        step = found["chains"][case]
        assert max_diff(step["theta"], alone["theta"]) <= TOLERANCE
        assert torch.equal(step["rng"], alone["rng"])
        assert [c["step"] for c in step["chains"]] == [c["step"] for c in alone["chains"]]
        for theirs, ours in zip(step["chains"], alone["chains"]):
            assert max_diff(list(theirs["v"].values()), list(ours["v"].values())) <= TOLERANCE
        assert max_diff(list(step["eval"]["v"].values()), list(alone["chains"][0]["v"].values())) <= TOLERANCE


def test_a_two_process_chain_run_stopped_and_resumed_is_the_one_process_run(two_ranks, tmp_path):
    """Rank 0's checkpoint holds rank 1's chain too: the resumed two-process run ends as one process does."""
    first, second, out = two_ranks
    assert json.dumps(first["chain_run"], default=str) == json.dumps(second["chain_run"], default=str)
    assert first["chain_run"]["processes"] == 2
    alone = chain_run(tmp_path / "chains")
    folder = Path(alone["config"]["results_dir"]) / "tiny" / alone["run_id"]
    theirs = out / "chains" / "tiny" / alone["run_id"]
    got, want = pandas.read_csv(theirs / "episodes.csv"), pandas.read_csv(folder / "episodes.csv")
    assert list(got.columns) == list(want.columns)
    assert numpy.allclose(got.to_numpy(), want.to_numpy(), rtol=1e-9, atol=0)
    rows, expected = pandas.read_csv(theirs / "metrics.csv"), pandas.read_csv(folder / "metrics.csv")
    assert numpy.allclose(rows["val_loss_mean"], expected["val_loss_mean"], rtol=1e-9, atol=0)
    assert len(rows) == 3 and first["chain_run"]["test_loss_mean"] == pytest.approx(alone["test_loss_mean"], rel=1e-9)


def test_slices_are_contiguous_and_cover_the_batch():
    # 5 tasks over 2 ranks: 3 + 2; 32 over 3: 11 + 11 + 10; 2 over 3: 1 + 1 + 0
    assert [distributed.bounds(5, r, 2) for r in range(2)] == [(0, 3), (3, 5)]
    assert [distributed.bounds(32, r, 3) for r in range(3)] == [(0, 11), (11, 22), (22, 32)]
    assert [distributed.bounds(2, r, 3) for r in range(3)] == [(0, 1), (1, 2), (2, 2)]


@pytest.mark.parametrize("changes, message", [
    ({"algorithm": "reptile", "inner_optimizer": "adam", "inner_state": "carry"}, "inner_state: carry"),
    ({"meta_batch_size": 1}, "meta_batch_size: 1 tasks cannot be shared by 2 processes"),
    ({"batch_tasks": True, "task_chunk": 2, "inner_batch_size": 2}, "task_chunk with inner mini-batches"),
    ({"mamlpp": MamlPlusPlusConfig(per_step_bn_statistics=True)}, "mamlpp.per_step_bn_statistics: each process"),
])
def test_what_cannot_be_split_is_refused(monkeypatch, changes, message):
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(ConfigError, match=message):
        distributed.check(sine(**changes))


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_replayed_draws_are_the_task_gradients_draws(name):
    """Contract over the registry: skipping a task draws what computing it draws from the global RNG."""
    cfg = sine(name, inner_batch_size=3, inner_steps=3, outer_optimizer="adam")
    if name.startswith("naive_reptile"):
        cfg = sine(name, inner_steps=3)
    try:
        algorithm = build_algorithm(build_model(cfg).double(), cfg, num_classes=10)
    except ConfigError:
        pytest.skip(f"{name} does not run on sine")
    task = make_sine_task(shots=5, query=5, seed=4)
    torch.manual_seed(2)
    task_gradient(algorithm, task)
    computed = torch.get_rng_state()
    torch.manual_seed(2)
    algorithm.replay_draws(task)
    assert torch.equal(torch.get_rng_state(), computed)


def workers_of(tmp_path: Path) -> list[int]:
    """Live processes whose command line names this test's folder."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if str(tmp_path).encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            pass
    return found


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_on_one_process(tmp_path):
    """SIGKILL the whole two-process job after a checkpoint; rerun on one process: the uninterrupted numbers."""
    config = write_config(tmp_path / "tiny.yaml", sine_config(iterations=1500, eval_interval=500, checkpoint_interval=7,
                                                              meta_batch_size=4, eval_episodes=3, test_episodes=5,
                                                              precision="float64"))
    reference = start_run(config, tmp_path / "reference")
    assert reference.wait(300) == 0, reference.stderr.read()
    job = start_run(config, tmp_path / "results", "--procs", "2")
    checkpoint = lambda: list((tmp_path / "results").glob("tiny/*/checkpoint.pt"))
    assert wait_for(lambda: bool(checkpoint()), timeout=180), job.stderr.read() if job.poll() is not None else ""
    kill_group(job, signal.SIGKILL)  # the launcher and torchrun; the workers (own sessions) get SIGTERM
    assert wait_for(lambda: not workers_of(tmp_path), timeout=60), "a worker outlived its launcher"
    assert not list((tmp_path / "results").glob("tiny/*/summary.json")), "the run ended before the kill"
    state = torch.load(checkpoint()[0], weights_only=False)
    assert 0 < state["iteration"] < 1500
    again = start_run(config, tmp_path / "results")
    assert again.wait(300) == 0, again.stderr.read()
    folder = next((tmp_path / "results").glob("tiny/*/summary.json")).parent
    expected = next((tmp_path / "reference").glob("tiny/*/summary.json")).parent
    # 1500 outer steps of sums taken in another order (3 + 1 tasks, then 4): equal to float64 rounding
    got, want = pandas.read_csv(folder / "episodes.csv"), pandas.read_csv(expected / "episodes.csv")
    assert list(got.columns) == list(want.columns) and len(got) == 5
    assert numpy.allclose(got.to_numpy(), want.to_numpy(), rtol=1e-9, atol=0)
    test, expected_test = final_metrics(folder)[1], final_metrics(expected)[1]
    assert test["status"] == "finished" and test["test_loss_mean"] == pytest.approx(expected_test["test_loss_mean"], rel=1e-9)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["processes"] == 1 and summary["iterations_done"] == 1500
