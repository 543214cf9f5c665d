"""One place turns a :class:`~metacompare.config.runconfig.RunConfig` into what a run computes with.

Device, storage dtype, the task splits, the network (in the run's dtype and memory layout) and the
algorithm around it. ``metacompare run`` (and so ``sweep``, ``tune`` and ``compare``) builds through
:func:`build_run`, ``metacompare evaluate`` through :func:`build_network` and :func:`build_for`, and
``bench`` through :func:`build_for`, so a trained run is scored on the very network it was trained as.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from metacompare import engines  # noqa: F401  (installs how meta_train_step picks its engine)
from metacompare.models import precision
from metacompare.algorithms import build_algorithm
from metacompare.algorithms.base import MetaAlgorithm
from metacompare.data import TaskSplits, build_tasks
from metacompare.models import build_model
from metacompare.config.runconfig import RunConfig


@dataclass
class Run:
    """Everything a run computes with."""

    device: torch.device
    dtype: torch.dtype
    tasks: TaskSplits
    model: nn.Module
    algorithm: MetaAlgorithm


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (model initialisation draws from torch's)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def placement(cfg: RunConfig) -> tuple[torch.device, torch.dtype]:
    """The run's device and the dtype its weights and data are stored in (:data:`precision.STORAGE`:
    bfloat16 runs store float32 and autocast)."""
    return torch.device(cfg.device), precision.storage_dtype(cfg.precision)


def build_network(cfg: RunConfig) -> nn.Module:
    """The configured network, freshly initialised from torch's global generator, on the run's
    device and in its storage dtype."""
    device, dtype = placement(cfg)
    return build_model(cfg).to(device=device, dtype=dtype)


def build_for(model: nn.Module, cfg: RunConfig, num_classes: int | None = None) -> MetaAlgorithm:
    """The configured algorithm around ``model``, which first gets the run's memory layout
    (``memory_format``); ``num_classes`` is the training split's class count (the ``pretrain`` head)."""
    return build_algorithm(precision.prepare_model(model, cfg), cfg, num_classes=num_classes)


def build_run(cfg: RunConfig) -> Run:
    """Seed, draw the tasks (data errors surface here, before anything is written), then build the
    network and the algorithm: in this order, so that a seed gives the same initial weights."""
    seed_everything(cfg.seed)
    device, dtype = placement(cfg)
    tasks = build_tasks(cfg)
    model = build_network(cfg)
    algorithm = build_for(model, cfg, num_classes=tasks.train.num_classes)
    return Run(device, dtype, tasks, model, algorithm)
