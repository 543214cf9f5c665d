"""`metacompare bench --quick` runs end to end and writes a complete, finite table."""

from __future__ import annotations

import math

import pytest
import torch

from metacompare.storage import results
from metacompare.workflows.bench import COLUMNS, format_table
from metacompare.workflows.bench_worker import MACHINE_PROCS, QUICK_IMPLEMENTATIONS, QUICK_MACHINE
from metacompare.cli import main


@pytest.mark.slow  # 35 s: the whole quick race; test_cli_help runs bench end to end in the default suite
def test_quick_bench_writes_a_finite_csv_and_a_chart(tmp_path, capsys):
    assert main(["bench", "--quick", "--models", "conv4_strided", "--steps", "1", "--ways", "3", "--query", "2",
                 "--meta-batch", "3", "--repeats", "1", "--out", str(tmp_path)]) == 0
    rows = results.read_csv(tmp_path / "bench.csv")
    assert list(rows[0]) == COLUMNS
    assert [r["implementation"] for r in rows] == list(QUICK_IMPLEMENTATIONS)
    numeric = ["seconds_median", "seconds_min", "seconds_max", "tasks_per_s", "peak_memory_mb", "gflop",
               "gflop_per_s", "matmul_peak_gflop_per_s", "peak_fraction", "grad_max_abs_diff"]
    for row in rows:
        for column in numeric:
            assert math.isfinite(float(row[column])), (row["implementation"], column, row[column])
        assert float(row["seconds_median"]) > 0 and float(row["gflop"]) > 0
        expected_ratio = "learn2learn" if row["algorithm"] != "reptile" else "seed"
        assert math.isfinite(float(row[f"speedup_vs_{expected_ratio}"]))
    by_name = {r["implementation"]: r for r in rows}
    # float32 paths compute the same gradient as the reference (tiny model: differences are rounding)
    for name in ("metacompare maml", "higher maml", "metacompare reptile", "metacompare fomaml [batched]",
                 "metacompare fomaml [vmap]"):
        assert float(by_name[name]["grad_max_rel_diff"]) < 1e-4, name
    assert (tmp_path / "bench.png").stat().st_size > 1000
    out = capsys.readouterr().out
    assert "learn2learn maml" in out and "matmul peak" in out
    assert format_table([]).count("\n") == 1
    # the whole-machine race: learn2learn at torch's default threads, metacompare on one process per core
    machine = {r["implementation"]: r for r in results.read_csv(tmp_path / "bench_machine.csv")}
    assert list(machine) == list(QUICK_MACHINE) and "whole machine" in out
    ours = machine[QUICK_MACHINE[1]]
    assert int(ours["processes"]) == MACHINE_PROCS and float(ours["grad_max_rel_diff"]) < 1e-4
    assert math.isfinite(float(ours["speedup_vs_learn2learn"]))


def test_a_gpu_race_without_a_gpu_is_a_one_line_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: tests/test_cuda.py races on it")
    assert main(["bench", "--quick", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "--device: 'cuda' needs a visible CUDA GPU; use --device cpu" in capsys.readouterr().err
    assert not (tmp_path / "bench.csv").exists()


def test_task_sampling_rate_on_the_omniglot_config(omniglot_root):
    """The sampling rate is measured on the race's task shape: the config's first algorithm (Reptile,
    10 training images per class) plus 15 query images once asked for more drawings than a class has."""
    from metacompare.workflows.bench import sampling_rate

    rate = sampling_rate("configs/omniglot_minimal.yaml", str(omniglot_root), ways=5, shots=1, query=15, count=3)
    assert rate["tasks"] == 3 and 0 < rate["tasks_per_s"] < math.inf


@pytest.mark.slow  # about 15 CPU-seconds (worker start-up and FLOP counting); test_resnet12 checks the gradients
def test_quick_bench_races_resnet12(tmp_path, capsys):
    """`bench --models resnet12`: the same rows for ResNet-12 (quick: widths 8-20-40-80, 16x16 images), whose
    metacompare meta-gradients, looped and task-batched, are learn2learn's up to float32 rounding."""
    names = ["learn2learn fomaml", "metacompare fomaml [batched]", "learn2learn maml", "metacompare maml"]
    assert main(["bench", "--quick", "--models", "resnet12", "--steps", "1", "--ways", "3", "--query", "2",
                 "--meta-batch", "2", "--repeats", "1", "--no-machine", "--out", str(tmp_path),
                 "--implementations", *names]) == 0
    rows = {r["implementation"]: r for r in results.read_csv(tmp_path / "bench.csv")}
    assert list(rows) == names and {r["model"] for r in rows.values()} == {"resnet12"}
    for name, row in rows.items():
        assert float(row["seconds_median"]) > 0 and float(row["peak_memory_mb"]) == float(row["peak_memory_mb"])
        assert float(row["grad_max_rel_diff"]) < 1e-4, name
