"""Sine-wave regression (``dataset: sine``): Finn, Abbeel & Levine's (2017) sinusoid tasks."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset

from metacompare.data.source import DataSource, register
from metacompare.data.tasks import stream_seed
from metacompare.errors import ConfigError
from metacompare.config.runconfig import RunConfig


class SineWaves(Dataset):
    """A finite family of sine functions, ``points`` samples each, computed on demand.

    Item ``i`` is point ``i % points`` of function ``i // points``; the function's amplitude
    (0.1-5.0) and phase (0-pi) and the point's x (uniform in [-5, 5]) are fixed by ``seed``, as in the
    sinusoid experiment of Finn, Abbeel & Levine (2017), section 5.1.
    """

    def __init__(self, functions: int, points: int, seed: int):
        rng = np.random.default_rng(seed)
        self.functions, self.points = functions, points
        self.amplitude = rng.uniform(0.1, 5.0, functions).astype(np.float32)
        self.phase = rng.uniform(0.0, math.pi, functions).astype(np.float32)
        self.x = rng.uniform(-5.0, 5.0, (functions, points)).astype(np.float32)
        self.labels_to_indices = {f: list(range(f * points, (f + 1) * points)) for f in range(functions)}
        self.indices_to_labels = {i: i // points for i in range(functions * points)}

    def __len__(self) -> int:
        return self.functions * self.points

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        f, j = divmod(index, self.points)
        x = self.x[f, j]
        y = self.amplitude[f] * np.sin(x - self.phase[f])
        return torch.tensor([x]), torch.tensor([y])




class Sine(DataSource):
    """Regression on one function per task: the ``mlp`` of Finn et al., one "way"."""

    name = "sine"
    classification = False
    networks = ("mlp",)
    images = False

    def splits(self, cfg: RunConfig) -> tuple[dict[str, SineWaves], None]:
        """10,000 training functions from ``seed``; 1,000 validation and 1,000 test functions from ``eval_seed``."""
        points = max(50, cfg.training_shots + cfg.query, cfg.shots + cfg.evaluation_query)
        return {"train": SineWaves(10_000, points, seed=stream_seed(cfg.seed, "train functions")),
                "validation": SineWaves(1_000, points, seed=stream_seed(cfg.eval_seed, "validation functions")),
                "test": SineWaves(1_000, points, seed=stream_seed(cfg.eval_seed, "test functions"))}, None

    def input_shape(self, cfg: RunConfig, channels: int | None = None) -> tuple[int, ...]:
        return (1,)

    def episode_fields(self, config: dict, data: str | None) -> dict:
        """The functions' points (:meth:`splits`): nothing is read from disk."""
        shots, query = config.get("shots"), config.get("test_query") or config.get("query")
        return {"sine points": max(50, (config.get("train_shots") or shots) + config.get("query"), shots + query)}

    def check(self, cfg: RunConfig) -> None:
        if cfg.model != "mlp":
            raise ConfigError(f"model: sine regression uses the 'mlp' model, got '{cfg.model}'")
        if cfg.ways != 1:
            raise ConfigError(f"ways: sine regression tasks have one function, set ways: 1 (got {cfg.ways})")


register(Sine())
