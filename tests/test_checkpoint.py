"""A run's state and its checkpoint (metacompare.training.checkpoint), and the run's phases in runner.py."""

from __future__ import annotations

import ast
import dataclasses
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from metacompare.training import runner
from metacompare.training.build import build_run
from metacompare.errors import UserError
from metacompare.training import checkpoint
from metacompare.training.checkpoint import RunState
from tests.test_budget import tiny
from tests.test_tune import one_thread  # noqa: F401 (autouse fixture: one torch thread)


def test_the_status_is_decided_by_the_state():
    state = RunState()
    assert state.status == "running" and state.healthy
    state.tested = True
    assert state.status == "finished"
    state.diverge(7)
    assert state.status == "diverged" and not state.healthy and state.diverged_at == 7


def test_resume_restores_the_algorithm_every_generator_and_the_counters(tmp_path):
    cfg = tiny(tmp_path, algorithm="reptile", inner_steps=2)
    run = build_run(cfg)
    algorithm, rng = run.algorithm, run.tasks.train.rng
    algorithm.meta_train_step([run.tasks.train.sample() for _ in range(2)])
    state = RunState(iteration=5, rows=[{"iteration": 3, "val_loss_mean": 0.5}], elapsed=2.0, train_time=1.0,
                     peak_mb=10.0, extra={"budget": {"work": 450.0}, "rungs": {"1/2": {"iteration": 2}}})
    path = tmp_path / checkpoint.FILE
    checkpoint.save(path, state, algorithm, cfg, rng, elapsed=4.0, peak_mb=3.0)
    weights = {k: v.clone() for k, v in algorithm.model.state_dict().items()}
    ahead = (rng.random(), torch.rand(3), np.random.rand(3), random.random())  # what a resumed run draws next

    again = build_run(cfg)  # fresh weights and generators
    resumed = checkpoint.resume(path, cfg, again.algorithm, again.tasks.train.rng)
    assert dataclasses.asdict(resumed) == {**dataclasses.asdict(state), "elapsed": 4.0, "peak_mb": 10.0}
    assert all(torch.equal(v, weights[k]) for k, v in again.algorithm.model.state_dict().items())
    drawn = (again.tasks.train.rng.random(), torch.rand(3), np.random.rand(3), random.random())
    assert drawn[0] == ahead[0] and torch.equal(drawn[1], ahead[1]) and np.array_equal(drawn[2], ahead[2])
    assert drawn[3] == ahead[3]
    assert checkpoint.resume(tmp_path / "none.pt", cfg, again.algorithm, again.tasks.train.rng) == RunState()


def test_a_diverged_checkpoint_resumes_diverged_and_another_config_is_refused(tmp_path):
    cfg = tiny(tmp_path)
    run = build_run(cfg)
    path = tmp_path / checkpoint.FILE
    checkpoint.save(path, RunState(iteration=4, diverged_at=4), run.algorithm, cfg, run.tasks.train.rng, 1.0, 0.0)
    assert torch.load(path, weights_only=True)["status"] == "diverged"
    assert checkpoint.resume(path, cfg, run.algorithm, run.tasks.train.rng).status == "diverged"
    with pytest.raises(UserError, match="different config.*fields differ: outer_lr"):
        checkpoint.load(path, tiny(tmp_path, outer_lr=0.5))


def functions(path: Path) -> dict[str, ast.FunctionDef]:
    tree = ast.parse(path.read_text())
    return {node.name: node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


def test_a_run_reads_as_short_phases_and_the_runner_never_names_a_status():
    source = Path(runner.__file__)
    found = {**functions(source), **functions(Path(checkpoint.__file__))}
    long = {name: f.end_lineno - f.lineno + 1 for name, f in found.items() if f.end_lineno - f.lineno + 1 > 60}
    assert not long, f"functions over 60 lines: {long}"
    lifecycle = found["train_and_evaluate"]
    calls = sorted((n.lineno, n.func.id) for n in ast.walk(lifecycle)
                   if isinstance(n, ast.Call) and isinstance(n.func, ast.Name))
    called = [name for _, name in calls]
    phases = ["prepare", "resume", "score_floor", "train", "run_test", "score_rungs", "record"]
    assert [name for name in called if name in phases] == phases
    literals = {n.value for n in ast.walk(ast.parse(source.read_text())) if isinstance(n, ast.Constant)}
    assert not literals & {"running", "finished", "diverged"}  # RunState.status decides
