"""Time to the answer: how long a four-algorithm ``compare --data`` takes on the wall clock against the
training it buys.

The ratio is ``wall / (training CPU-seconds spent / processes used)`` (``--procs`` per run times
``--workers`` runs at a time): the compare command's wall time
over the time its training would take if every process trained all the time. 1.0 means nothing but
training ran; the rest is the untrained floor, validation, the test, the training-task scores, logging
and waiting. The data is a user-style folder: Omniglot's ``images_background_small1.zip`` unpacked into
a temporary folder. Each run's wall-time split (its ``summary.json``; older summaries lack some parts,
shown as ``-``) is printed and, with ``--out``, appended to a CSV.

    PYTHONPATH=. python experiments/time_to_answer.py --budget cpu:60 --out results/time_to_answer/runs.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, as the docstring shows
from metacompare.training.timing import PHASES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ZIP = ROOT.parent / "shared" / "data" / "omniglot" / "images_background_small1.zip"  # where the tests find it
PARTS = PHASES  # the runner's wall-time split (metacompare.training.timing)


def run_compare(data: Path, results: Path, budget: str, procs: int, workers: int, extra: list[str]) -> float:
    """The compare command's wall seconds (it must succeed)."""
    command = [sys.executable, "-m", "metacompare", "compare", "--data", str(data), "--ways", "5", "--shots", "1",
               "--budget", budget, "--no-tune", "--seeds", "1", "--procs", str(procs), "--workers", str(workers),
               "--results-dir", str(results), "--no-progress", *extra]
    began = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    return time.perf_counter() - began


def summaries(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.glob("*/*/summary.json"))]


def split_of(summary: dict) -> dict[str, float]:
    """The run's wall-time split: the recorded ``time_split`` where there is one, else what older
    summaries hold (training and validation and logging seconds; the rest unsplit)."""
    if "time_split" in summary:
        return dict(summary["time_split"])
    return {"training": summary.get("train_seconds"), "validation": summary.get("validation_seconds"),
            "logging": summary.get("logging_seconds")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", default="cpu:60")
    parser.add_argument("--procs", type=int, default=2, help="processes per run (compare --procs)")
    parser.add_argument("--workers", type=int, default=1, help="runs at a time (compare --workers)")
    parser.add_argument("--label", default="", help="a name for this measurement in the CSV")
    parser.add_argument("--out", type=Path, default=None, help="append the runs' rows to this CSV")
    parser.add_argument("--set", action="append", default=[], help="passed to compare as --set")
    parser.add_argument("--zip", type=Path, default=None, help="the small1 zip (default: ../shared/data/omniglot/, beside the project)")
    parser.add_argument("--results", type=Path, default=None,
                        help="keep the comparison here (default: a temporary folder, removed afterwards)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="time-to-answer-") as folder:
        data = Path(folder) / "small1"
        with zipfile.ZipFile(args.zip or ZIP) as archive:
            archive.extractall(data)
        results = args.results.resolve() if args.results else Path(folder) / "results"
        wall = run_compare(data / "images_background_small1", results, args.budget, args.procs, args.workers,
                           [x for s in args.set for x in ("--set", s)])
        runs = summaries(results)
    cpu = sum(r.get("train_cpu_seconds", 0.0) for r in runs)
    used = args.procs * args.workers  # the processes training at once
    ratio = wall / (cpu / used)
    # under load the CPU-seconds of training take longer on the clock: the training's own wall time
    # (its slowest process per iteration) is the load-independent reference
    train_wall = sum(r.get("train_seconds", 0.0) for r in runs) / args.workers
    print(f"compare wall {wall:.0f} s; training {cpu:.0f} CPU-s on {used} processes; "
          f"time-to-answer ratio {ratio:.2f}; wall over the training's wall time ({train_wall:.0f} s): "
          f"{wall / train_wall:.2f}; the runs' own wall time {sum(r['wall_time_s'] for r in runs):.0f} s")
    rows = []
    for r in runs:
        split = split_of(r)
        print(f"  {r['algorithm']:9s} wall {r['wall_time_s']:7.1f} s, {r.get('processes', 1)} process(es), "
              f"{r['iterations_done']} its, test {100 * r['test_accuracy_mean']:.2f} ± "
              f"{100 * r['test_accuracy_ci95']:.2f}: "
              + ", ".join(f"{k} {split[k]:.1f}" for k in PARTS if split.get(k) is not None))
        rows.append({"label": args.label, "budget": args.budget, "procs": args.procs, "workers": args.workers,
                     "compare_wall_s": round(wall, 1),
                     "train_cpu_s_total": round(cpu, 1), "ratio": round(ratio, 3),
                     "train_wall_s_total": round(train_wall * args.workers, 1), "ratio_to_train_wall": round(wall / train_wall, 3), "algorithm": r["algorithm"],
                     "processes": r.get("processes", 1), "iterations": r["iterations_done"],
                     "run_wall_s": round(r["wall_time_s"], 1), "test_accuracy": round(r["test_accuracy_mean"], 4),
                     "test_ci95": round(r["test_accuracy_ci95"], 4),
                     **{k: "" if split.get(k) is None else round(split[k], 1) for k in PARTS}})
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        new = not args.out.exists()
        with args.out.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            if new:
                writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
