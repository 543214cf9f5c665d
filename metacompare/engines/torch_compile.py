"""``compile: true``: an engine's pure step through ``torch.compile`` (:mod:`metacompare.engines.compiled`).

torch.compile (Ansel et al. 2024, "PyTorch 2") traces a Python function with TorchDynamo and hands
the graph to Inductor, which fuses the elementwise work (BatchNorm, ReLU, the SGD update) around the
library's convolutions and matmuls. ``torch.autograd.grad`` cannot be traced (it breaks the graph),
and a compiled backward cannot be differentiated again (MAML's second order), so the compiled step is
the task's whole meta-gradient written as one pure function with ``torch.func.grad``: forward, inner
steps and query gradient, from detached θ and the task's tensors to the gradient, loss and accuracy.
Dynamo traces it without a break (``fullgraph``) into one program with no autograd left at run time.
"""

from __future__ import annotations

import os
import shutil
from typing import Callable

import torch

from metacompare.errors import ConfigError

Pure = Callable[..., tuple]
# torch.compile's mode on CUDA. "reduce-overhead" (CUDA graphs) would remove the launch cost of a task's
# many small kernels, but no GPU has run it yet: experiments/compile_probe.py --cuda-mode measures both.
CUDA_MODE = "default"


def compile_pure(fn: Pure, device: str) -> Pure:
    """``fn`` compiled whole for fixed shapes (a meta-batch's tasks all share them), in
    :data:`CUDA_MODE` on a GPU."""
    mode = CUDA_MODE if device.startswith("cuda") else None
    # Every algorithm object compiles its engine's pure step anew: a process that builds many (sweep,
    # compare, tests) would pass Dynamo's default of 8 compilations of one function and run it eagerly.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 256)
    fast = torch.compile(fn, fullgraph=True, dynamic=False, mode=mode)

    def run(*args):
        # Dynamo compiles nothing under a TorchDispatchMode (the bench's FlopCounterMode): there the
        # same pure function runs eagerly, so it is counted as it computes.
        return fn(*args) if _dispatch_mode_on() else fast(*args)
    return run


def _dispatch_mode_on() -> bool:
    from torch.utils._python_dispatch import is_in_torch_dispatch_mode

    return is_in_torch_dispatch_mode(include_infra_modes=False)


def cxx_compiler() -> str | None:
    """The C++ compiler Inductor builds CPU kernels with (``$CXX``, else ``g++``, ``clang++``)."""
    found = [shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "clang++") if c]
    return next((c for c in found if c), None)


def check(cfg, compilable: list[str]) -> None:
    """Refuse ``compile: true`` where the compiled step does not exist (``compilable``: the algorithms that
    declare one) or would compute something else."""
    if not cfg.compile:
        return
    reasons = [
        (cfg.algorithm not in compilable, f"{cfg.algorithm} has no compiled step (only {', '.join(compilable)} "
                                          f"have); set compile: false"),
        (cfg.backend != "metacompare", f"the compiled step is metacompare's own inner loop, not {cfg.backend}'s; "
                                       f"set backend: metacompare or compile: false"),
        (cfg.inner_batch_size > 0, "inner mini-batches draw shuffles that a compiled graph would draw from "
                                   "another generator; set inner_batch_size: 0 or compile: false"),
        (cfg.inner_state != "reset", "a carried inner state threads every task through the one before; "
                                     "set inner_state: reset or compile: false"),
        (cfg.device == "cpu" and cxx_compiler() is None, "Inductor needs a C++ compiler on the CPU and none was "
                                                         "found (g++, clang++ or $CXX); install one or set "
                                                         "compile: false"),
    ]
    for refused, why in reasons:
        if refused:
            raise ConfigError(f"compile: {why}")
