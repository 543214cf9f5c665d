"""``metacompare evaluate``: a trained Omniglot model on Lake's one-shot classification runs (Lake,
Salakhutdinov & Tenenbaum 2015, Science; read by :mod:`metacompare.data.lake_runs`).

A trained 20-way model adapts on each run's 20 training images and classifies its 20 test items; the
error rate over the 400 items is what the paper reports, 4.5% for people and 3.3% for Bayesian
Program Learning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from metacompare import files, paths
from metacompare.algorithms.base import predict_query
from metacompare.training.build import build_for, build_network, placement
from metacompare.config.loading import RunConfig, expand
from metacompare.data import Task
from metacompare.data.lake_runs import WAYS, check_trained_on, read_runs
from metacompare.errors import UserError
from metacompare.models import build_model

HUMAN_ERROR = 0.045  # Lake et al. (2015), one-shot classification, people
BPL_ERROR = 0.033    # Lake et al. (2015), Bayesian Program Learning


@dataclass
class RunScore:
    run: str
    errors: int
    items: int

    @property
    def error_rate(self) -> float:
        return self.errors / self.items


@dataclass
class LakeResult:
    runs: list[RunScore]
    algorithm: str
    steps: int
    evaluation: str

    @property
    def error_rate(self) -> float:
        return sum(r.errors for r in self.runs) / sum(r.items for r in self.runs)


def find_weights(path: str | Path) -> Path:
    """A run folder's final ``model.pt`` (or its ``checkpoint.pt`` if unfinished), or the file given."""
    path = Path(path)
    if path.is_dir():
        for name in ("model.pt", "checkpoint.pt"):
            if (path / name).exists():
                return path / name
        raise UserError(f"{path}: holds neither model.pt nor checkpoint.pt; pass a run folder "
                        f"results/<experiment>/<run_id> of a run trained with `metacompare run`")
    if not path.exists():
        raise UserError(f"{path}: {paths.dangling(path) or 'no such run folder or weights file'}; pass a run folder "
                        f"results/<experiment>/<run_id> or its model.pt")
    return path


WEIGHTS_FIX = ("give the model.pt or checkpoint.pt of a run trained with `metacompare run` (weights are "
               "loaded with torch.load(weights_only=True); a file holding anything else is refused)")


def load_trained(path: str | Path, overrides: Sequence[str] = ()):
    """The algorithm of a saved run with its trained weights, and the run's config (``overrides`` applied)."""
    weights = find_weights(path)
    state = files.load_torch(weights, WEIGHTS_FIX, required=("config", "algorithm"))
    if not isinstance(state["config"], dict) or not isinstance(state["algorithm"], dict):
        files.fail(weights, "its config or weights are not mappings", WEIGHTS_FIX)
    trained = expand(state["config"], source=str(weights))[0]
    cfg: RunConfig = expand(state["config"], overrides, source=str(weights))[0]
    _refuse_shape_change(trained, cfg, weights)
    algorithm = build_for(build_network(cfg), cfg, num_classes=state.get("num_classes"))
    try:
        algorithm.load_state_dict(state["algorithm"])
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        files.fail(weights, f"its weights do not fit a {cfg.algorithm} {cfg.model} ({str(err).splitlines()[0][:160]})",
                   "evaluate with the settings it was trained with")
    return algorithm, cfg


def _refuse_shape_change(trained: RunConfig, cfg: RunConfig, weights: Path) -> None:
    """``--set`` may change how a run is scored, not the network it trained: compare the shapes of
    both configs' networks (and the algorithm, whose state holds its own tensors)."""
    changed = sorted(k for k, v in cfg.identity().items() if trained.identity()[k] != v)
    if not changed:
        return
    shapes = [{k: tuple(t.shape) for k, t in build_model(c).state_dict().items()} for c in (trained, cfg)]
    if shapes[0] != shapes[1] or trained.algorithm != cfg.algorithm:
        raise UserError(f"--set {', '.join(changed)}: changes the network {weights} was trained as "
                        f"({trained.algorithm} {trained.model}, {trained.ways} ways, {trained.filters} filters, "
                        f"image size {trained.omniglot.image_size}); set only fields that change how it is "
                        f"scored, e.g. evaluation or eval_inner_steps")


def evaluate_runs(algorithm, runs: dict[str, Task], steps: int) -> list[RunScore]:
    """Adapt on each run's training images, classify its test items; errors per run."""
    cfg = algorithm.cfg
    device, dtype = placement(cfg)
    scores = []
    for name, task in runs.items():
        task = task.to(device, dtype)
        predict = algorithm.adapt(task, steps)
        with torch.no_grad():
            outputs = predict_query(predict, task.support_x, task.query_x, cfg.evaluation)
        errors = int((outputs.argmax(dim=-1) != task.query_y).sum())
        scores.append(RunScore(name, errors, len(task.query_y)))
    return scores


def evaluate_checkpoint(path: str | Path, runs_folder: str | Path, steps: int | None = None,
                        overrides: Sequence[str] = ()) -> LakeResult:
    """Score a trained Omniglot model on Lake's runs; ``steps`` defaults to the run's eval_inner_steps."""
    algorithm, cfg = load_trained(path, overrides)
    check_trained_on(cfg.dataset, path)
    head = getattr(algorithm.model[-1], "out_features", cfg.ways)
    if cfg.ways != WAYS or head != WAYS:
        raise UserError(f"{path}: the model classifies {cfg.ways} ways, but Lake's runs are {WAYS}-way one-shot "
                        f"problems; train with ways: {WAYS} (e.g. configs/papers/omniglot_20way_1shot.yaml)")
    steps = cfg.eval_inner_steps if steps is None else steps
    if steps < 0:
        raise UserError(f"--steps: must be 0 or more adaptation steps, got {steps}")
    runs = read_runs(runs_folder, cfg.omniglot.image_size)
    return LakeResult(evaluate_runs(algorithm, runs, steps), cfg.algorithm, steps, cfg.evaluation)


def format_result(result: LakeResult) -> str:
    lines = [f"Lake et al. (2015) one-shot classification: {len(result.runs)} runs, {WAYS}-way 1-shot; "
             f"{result.algorithm} after {result.steps} adaptation steps, {result.evaluation} evaluation"]
    lines += [f"  {r.run}: error {100 * r.error_rate:5.1f}% ({r.errors}/{r.items})" for r in result.runs]
    total = sum(r.items for r in result.runs)
    errors = sum(r.errors for r in result.runs)
    lines += [f"  overall error {100 * result.error_rate:.1f}% ({errors}/{total})",
              f"  people        {100 * HUMAN_ERROR:.1f}%  (Lake et al. 2015)",
              f"  BPL           {100 * BPL_ERROR:.1f}%  (Lake et al. 2015)"]
    return "\n".join(lines)
