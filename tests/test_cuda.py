"""The CUDA paths: skipped without a GPU (CI has none); run on a lent GPU machine.

What must hold on a GPU is what holds on the CPU: the looped and task-batched engines give the CPU's
float64 meta-gradient (only the kernels' summation order differs), bfloat16 points the same way, the
data-parallel engine gives the one-process meta-gradient (NCCL with a GPU per process, gloo where
processes share a GPU), and `run` and `bench --device cuda` work end to end.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from metacompare.engines import distributed

from metacompare.models import precision

from metacompare.storage import results
from metacompare.algorithms import build_algorithm
from metacompare.cli import main
from metacompare.config.loading import RunConfig
from metacompare.models import conv4, conv4_finn
from tests.conftest import make_task
from tests.faults import sine_config, write_config
from tests.test_distributed import run_two_ranks

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TOLERANCE = 1e-10  # float64 on both devices: only the order of the kernels' sums differs
ALGORITHMS = ["maml", "fomaml", "reptile"]


def config(algorithm: str, **changes) -> RunConfig:
    base = dict(algorithm=algorithm, dataset="omniglot", model="conv4", ways=3, shots=2, query=3, inner_lr=0.1,
                inner_steps=2, outer_optimizer="sgd", outer_lr=1e-3, meta_batch_size=4)
    return RunConfig(**{**base, **changes})


NETWORKS = {"conv4": lambda: conv4(ways=3, filters=8, image_size=16),
            "conv4_strided": lambda: conv4(ways=3, filters=8, image_size=16, strided=True),
            "conv4_finn": lambda: conv4_finn(ways=3, filters=8, image_size=16)}  # BatchNorm offset, no scale


def meta_gradient(algorithm: str, device: str, dtype=torch.float64, strided: bool = False, model: str = "conv4",
                  **changes) -> list[torch.Tensor]:
    """The mean meta-gradient of one ``meta_train_step`` on 4 fixed tasks, brought back to the CPU."""
    model = "conv4_strided" if strided else model
    cfg = config(algorithm, device=device, model=model, **changes)
    torch.manual_seed(0)
    network = NETWORKS[model]()
    model = precision.prepare_model(network.to(device=device, dtype=dtype), cfg)
    tasks = [precision.prepare_task(make_task(seed=i).to(device, dtype), cfg) for i in range(4)]  # same pixels
    torch.manual_seed(1)
    build_algorithm(model, cfg).meta_train_step(tasks)
    return [p.grad.detach().double().cpu() for p in model.parameters()]


def max_abs(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("changes", [{}, {"batch_tasks": True}, {"memory_format": "channels_last"},
                                     {"batch_tasks": True, "task_chunk": 2}, {"vmap": True}],
                         ids=["loop", "batched", "channels_last", "batched-chunks", "vmap"])
def test_cuda_meta_gradient_is_the_cpu_one(algorithm, changes):
    cpu = meta_gradient(algorithm, "cpu")
    assert max(g.abs().max().item() for g in cpu) > 1e-3, "degenerate test: the gradient is ~0"
    assert max_abs(meta_gradient(algorithm, "cuda", **changes), cpu) <= TOLERANCE


@pytest.mark.parametrize("batch_tasks", [False, True], ids=["loop", "batched"])
def test_reptile_protocol_on_cuda(batch_tasks):
    """supervised-reptile's inner loop (Adam with beta1 0, mini-batches drawn on the CPU generator) once
    failed on CUDA only: the drawn indices stayed on the CPU."""
    # CPU and CUDA on the same engine: the batched one draws one order for all tasks, the loop one each
    changes = dict(inner_optimizer="adam", inner_betas=(0.0, 0.999), inner_lr=1e-3, inner_batch_size=4,
                   inner_steps=3, batch_tasks=batch_tasks)
    cpu = meta_gradient("reptile", "cpu", **changes)
    assert max(g.abs().max().item() for g in cpu) > 1e-6, "degenerate test: the gradient is ~0"
    assert max_abs(meta_gradient("reptile", "cuda", **changes), cpu) <= TOLERANCE


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("batch_tasks", [False, True], ids=["loop", "batched"])
def test_finns_network_on_cuda(algorithm, batch_tasks):
    """cbfinn/maml's BatchNorm (offset, no scale, frozen in the inner loop) once failed on CUDA only."""
    cpu = meta_gradient(algorithm, "cpu", model="conv4_finn")
    assert max_abs(meta_gradient(algorithm, "cuda", model="conv4_finn", batch_tasks=batch_tasks), cpu) <= TOLERANCE


def test_float32_on_cuda_is_exact_without_tf32():
    """The fast paths' float32 gradients on a GPU differ from learn2learn's by up to 3e-1 (relative,
    5 inner steps at step 0.4) because cuDNN runs float32 convolutions in TF32 by default; with TF32
    off they agree as on the CPU."""
    from metacompare.workflows.bench_worker import IMPLEMENTATIONS, Setting, make_model, make_tasks, step_function

    s = Setting(model="conv4_strided", inner_steps=5, meta_batch=4, filters=8, image_size=14, query=2, device="cuda")
    def grads(name):
        model = make_model(s)
        step_function(IMPLEMENTATIONS[name], s, model, make_tasks(s))()
        return torch.cat([p.grad.reshape(-1).double() for p in model.parameters()])
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        for name, reference in [("metacompare maml", "learn2learn maml"),
                                ("metacompare maml [batched]", "learn2learn maml"),
                                ("metacompare fomaml [batched]", "learn2learn fomaml")]:
            expected = grads(reference)
            assert ((grads(name) - expected).norm() / expected.norm()).item() < 1e-4, name
    finally:
        torch.backends.cudnn.allow_tf32 = before


# Measured on an H200 (torch 2.11): the looped bfloat16 (FO)MAML gradient points less well than on the
# CPU (cosine 0.832 for MAML and 0.913 for FOMAML against the CPU's 0.968 and 0.989); the task-batched
# bfloat16 engine and looped Reptile meet the CPU's bar. Known, not yet explained: kept as strict xfails.
LOOPED_BF16_SHORTFALL = pytest.mark.xfail(strict=True, reason="looped bfloat16 (FO)MAML on CUDA: cosine "
                                                              "0.83 / 0.91 against the CPU's 0.97 / 0.99")


@pytest.mark.parametrize("algorithm, batch_tasks", [
    pytest.param("maml", False, marks=LOOPED_BF16_SHORTFALL),
    pytest.param("fomaml", False, marks=LOOPED_BF16_SHORTFALL),
    ("reptile", False), ("maml", True), ("fomaml", True), ("reptile", True)])
def test_cuda_bfloat16_points_the_same_way(algorithm, batch_tasks):
    """bfloat16 on the GPU errs no more than bfloat16 on the CPU does (both against the CPU's float64
    gradient; on this tiny network the CPU's bfloat16 MAML gradient is 26% off, cosine 0.968)."""
    def flat(device):
        grads = meta_gradient(algorithm, device, torch.float32, strided=True, precision="bfloat16",
                              batch_tasks=batch_tasks)
        return torch.cat([g.reshape(-1) for g in grads])
    exact = torch.cat([g.reshape(-1) for g in meta_gradient(algorithm, "cpu", strided=True)])
    gpu, cpu = flat("cuda"), flat("cpu")
    assert torch.isfinite(gpu).all() and not torch.equal(gpu, exact)
    assert torch.nn.functional.cosine_similarity(gpu, exact, dim=0).item() >= 0.95
    assert (gpu - exact).norm() <= 1.5 * (cpu - exact).norm()


def _rank_main(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    distributed.start("cuda")
    found = {"backend": torch.distributed.get_backend(),
             "grads": {a: meta_gradient(a, "cuda") for a in ALGORITHMS},
             "batched": meta_gradient("maml", "cuda", batch_tasks=True)}
    torch.save(found, Path(out) / f"rank{rank}.pt")
    distributed.stop()


def test_two_processes_on_cuda_give_the_one_process_meta_gradient(tmp_path):
    run_two_ranks(_rank_main, tmp_path)
    expected_backend = "nccl" if torch.cuda.device_count() >= 2 else "gloo"  # NCCL refuses a shared GPU
    for rank in range(2):
        found = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert found["backend"] == expected_backend
        for algorithm in ALGORITHMS:
            assert max_abs(found["grads"][algorithm], meta_gradient(algorithm, "cuda")) <= TOLERANCE, algorithm
        assert max_abs(found["batched"], meta_gradient("maml", "cuda", batch_tasks=True)) <= TOLERANCE


@pytest.mark.parametrize("procs", [1, 2])
def test_run_on_cuda_end_to_end(tmp_path, procs):
    cfg = write_config(tmp_path / "c.yaml", sine_config(device="cuda", results_dir=str(tmp_path / "r"),
                                                        batch_tasks=True, meta_batch_size=4))
    assert main(["run", str(cfg), "--no-progress", "--procs", str(procs)]) == 0
    (path,) = (tmp_path / "r" / "tiny").glob("*/summary.json")
    summary = json.loads(path.read_text())
    assert summary["config"]["device"] == "cuda" and summary["processes"] == procs
    assert math.isfinite(summary["test_loss_mean"]) and summary["peak_memory_mb"] > 0


def test_omniglot_run_on_cuda_learns(tmp_path, omniglot_root):
    """Real Omniglot through learn2learn's task datasets onto the GPU: 400 FOMAML iterations (Finn's
    network, task-batched) beat the untrained floor (the looped run on the CPU: 56.0% against 45.8%)."""
    argv = ["run", "configs/omniglot_minimal.yaml", "--no-progress", "--results-dir", str(tmp_path),
            "--set", "device=cuda", "--set", f"data_root={omniglot_root}", "--set", "iterations=400",
            "--set", "eval_interval=400", "--set", "test_episodes=100", "--set", "eval_episodes=20",
            "--set", "algorithm=fomaml", "--set", "batch_tasks=true"]
    assert main(argv) == 0
    (summary,) = tmp_path.glob("*/*/summary.json")
    found = json.loads(summary.read_text())
    assert found["test_accuracy_mean"] > found["floor_accuracy_mean"] + 0.05, found["test_accuracy_mean"]


def test_bench_races_on_cuda(tmp_path, capsys):
    assert main(["bench", "--quick", "--device", "cuda", "--models", "conv4_strided", "--steps", "1", "--ways", "3",
                 "--query", "2", "--meta-batch", "3", "--repeats", "1", "--out", str(tmp_path), "--no-progress"]) == 0
    rows = {r["implementation"]: r for r in results.read_csv(tmp_path / "bench.csv")}
    assert {r["device"] for r in rows.values()} == {"cuda"}
    # float32 convolutions run in TF32 (see test_float32_on_cuda_is_exact_without_tf32): measured on an
    # H200, the per-task loops differ from learn2learn's gradient by <= 7.4e-4 (relative), the grouped
    # convolutions of the task-batched engine by 1.1e-2
    for name, tolerance in [("metacompare maml", 1e-3), ("higher maml", 1e-3), ("metacompare reptile", 1e-3),
                            ("metacompare fomaml [batched]", 5e-2)]:
        assert float(rows[name]["grad_max_rel_diff"]) < tolerance, name
    for row in rows.values():
        assert float(row["seconds_median"]) > 0 and float(row["peak_memory_mb"]) >= 0
    assert float(rows["naive reptile loop"]["peak_memory_mb"]) > 1  # its per-task deep copies (65 MB measured)
    assert "NVIDIA" in capsys.readouterr().out or torch.version.hip
