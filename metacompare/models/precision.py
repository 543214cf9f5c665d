"""Precision and memory layout, chosen by config: bfloat16 autocast and NHWC convolutions.

``precision: bfloat16`` runs meta-training under CPU/CUDA autocast (float32 master weights);
``memory_format: channels_last`` stores conv weights and images NHWC. Evaluation stays in the
run's storage dtype (:data:`STORAGE`).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from metacompare.data import Task
from metacompare.config.runconfig import RunConfig

# The dtype weights and data are stored in; bfloat16 keeps float32 storage and autocasts the compute.
STORAGE = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.float32}


def native_bfloat16(device: str = "cpu") -> bool:
    """Whether bfloat16 matrix products run in hardware: a CUDA GPU that has them, or a CPU with AVX-512
    (torch's dispatch level). On AVX2 they are emulated, about 30 times slower than float32."""
    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    return torch.backends.cpu.get_cpu_capability() == "AVX512"


def storage_dtype(name: str) -> torch.dtype:
    return STORAGE[name]


def autocast(cfg: RunConfig) -> contextlib.AbstractContextManager:
    """bfloat16 autocast when the config asks for it, otherwise nothing."""
    if cfg.precision != "bfloat16":
        return contextlib.nullcontext()
    # No cast cache: it keys on the weight tensor, so a weight updated in place inside the region
    # (Reptile's inner optimiser) would keep being read as its stale bfloat16 copy.
    return torch.autocast(torch.device(cfg.device).type, dtype=torch.bfloat16, cache_enabled=False)


def prepare_model(model: nn.Module, cfg: RunConfig) -> nn.Module:
    """Apply the configured memory layout to the model's 4-d weights (in place)."""
    if cfg.memory_format == "channels_last":
        model.to(memory_format=torch.channels_last)
    return model


def prepare_task(task: Task, cfg: RunConfig) -> Task:
    """Apply the configured memory layout to a task's images."""
    if cfg.memory_format != "channels_last" or task.support_x.dim() != 4:
        return task
    def nhwc(x):
        return x.contiguous(memory_format=torch.channels_last)
    return Task(nhwc(task.support_x), task.support_y, nhwc(task.query_x), task.query_y, task.classes)
