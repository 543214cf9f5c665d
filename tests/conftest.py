"""Shared fixtures: tiny seeded tasks and models, and the path to the real Omniglot data."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

import metacompare.engines  # noqa: F401  (as a run does: installs how meta_train_step picks its engine)
from metacompare.data import Task

OMNIGLOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "omniglot"


def pytest_configure(config):
    """The Ctrl-C tests need SIGINT to reach Python. A suite started in the background by a
    non-interactive shell (`cmd &`, as some CI runners do) inherits SIGINT ignored, and metacompare
    rightly leaves an ignored SIGINT alone; restore Python's usual handler (children then get the
    default action too, since only an ignored disposition survives exec)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def make_task(ways: int = 3, shots: int = 2, query: int = 3, size: int = 16, seed: int = 0,
              dtype: torch.dtype = torch.float64) -> Task:
    g = torch.Generator().manual_seed(seed)
    def images(n):
        return torch.rand(n, 1, size, size, generator=g, dtype=dtype)
    labels = lambda k: torch.arange(ways).repeat_interleave(k)
    return Task(images(ways * shots), labels(shots), images(ways * query), labels(query))


def make_sine_task(shots: int = 5, query: int = 5, seed: int = 0, dtype: torch.dtype = torch.float64) -> Task:
    g = torch.Generator().manual_seed(seed)
    amplitude, phase = 0.1 + 4.9 * torch.rand(1, generator=g), torch.pi * torch.rand(1, generator=g)
    x = (10 * torch.rand(shots + query, 1, generator=g) - 5).to(dtype)
    y = (amplitude * torch.sin(x - phase)).to(dtype)
    return Task(x[:shots], y[:shots], x[shots:], y[shots:])


@pytest.fixture
def omniglot_root() -> Path:
    if not (OMNIGLOT / "images_background_small1.zip").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"CI must have the real Omniglot data at {OMNIGLOT}")
        pytest.skip(f"real Omniglot data not found at {OMNIGLOT}")
    return OMNIGLOT
