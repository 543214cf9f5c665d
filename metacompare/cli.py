"""Command line: a thin layer that parses arguments and calls library functions.

Every user mistake surfaces as one line ``metacompare: error: ...`` and exit status 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from metacompare.errors import UserError


def _cmd_run(args: argparse.Namespace) -> int:
    from metacompare.config import load_experiment, with_overrides
    from metacompare.runner import train_and_evaluate

    configs = load_experiment(args.config, args.set)
    if args.results_dir:
        configs = [with_overrides(c, results_dir=args.results_dir) for c in configs]
    for cfg in configs:
        summary = train_and_evaluate(cfg, progress=not args.no_progress, force=args.force)
        print(_summary_line(summary))
    if not args.no_report:
        _write_reports(sorted({Path(c.results_dir) / c.experiment for c in configs}))
    return 0


def _write_reports(experiment_dirs: list[Path]) -> None:
    from metacompare.report import write_report

    for directory in experiment_dirs:
        print(f"report: {write_report(directory)}")


def _cmd_report(args: argparse.Namespace) -> int:
    """Report every experiment; one that cannot be read is one error line and does not stop the others."""
    from metacompare.report import write_report
    from metacompare.results import read_runs

    folder = Path(args.results_dir)
    experiments = [folder] if (folder / "runs.csv").exists() else sorted(
        p.parent for p in folder.glob("*/runs.csv")) if folder.is_dir() else []
    if not experiments:
        raise UserError(f"{folder}: neither an experiment folder (with runs.csv) nor a folder of them; "
                        f"give e.g. results/sine or results")
    failed = 0
    for directory in experiments:
        try:
            read_runs(directory)  # the results table, strictly: a broken one is one line, not a traceback
            print(f"report: {write_report(directory)}")
        except UserError as err:
            if args.debug or len(experiments) == 1:
                raise
            print(f"metacompare: error: {err}", file=sys.stderr)
            failed += 1
        except KeyboardInterrupt:  # the report is written atomically: the previous one is still whole
            print("metacompare: interrupted; the previous report is left as it was", file=sys.stderr)
            return 130
    return 2 if failed else 0


def _summary_line(s: dict) -> str:
    if s["status"] != "finished":
        return f"{s['algorithm']}: {s['status']} at iteration {s.get('diverged_at')} ({s['run_id']})"
    if s["dataset"] == "sine":
        score = f"test MSE {s['test_loss_mean']:.4f} ± {s['test_loss_ci95']:.4f}"
    else:
        score = f"test accuracy {100 * s['test_accuracy_mean']:.2f}% ± {100 * s['test_accuracy_ci95']:.2f}%"
    return (f"{s['algorithm']:>8}: {score} (95% CI, {s['test_episodes']} episodes), "
            f"{s['seconds_per_iteration']:.3f} s/iteration, peak {s['peak_memory_mb']:.0f} MB "
            f"-> {Path(s['config']['results_dir']) / s['experiment'] / s['run_id']}")


def _cmd_sweep(args: argparse.Namespace) -> int:
    from metacompare.sweep import load_sweep, run_sweep, status_counts

    configs = load_sweep(args.sweep, args.set, results_dir=args.results_dir)
    summaries = run_sweep(configs, workers=args.workers, executor=args.executor, address=args.address,
                          progress=not args.no_progress)
    counts = status_counts(summaries)
    table = Path(configs[0].results_dir) / configs[0].experiment / "runs.csv"
    print(f"{len(summaries)} runs: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
          + f" -> {table}")
    if not args.no_report:
        _write_reports([table.parent])
    return 1 if counts.get("failed") else 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from metacompare.lake import evaluate_checkpoint, format_result

    result = evaluate_checkpoint(args.checkpoint, args.lake_runs, steps=args.steps,
                                 overrides=[f"device={args.device}", *args.set])
    print(format_result(result))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from metacompare.bench import bench

    bench(args.models, args.steps, ways=args.ways, shots=args.shots, query=args.query, meta_batch=args.meta_batch,
          repeats=args.repeats, implementations=args.implementations, out_dir=args.out, threads=args.threads,
          quick=args.quick, data_root=args.data_root)
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from metacompare.download import download_omniglot

    for path in download_omniglot(Path(args.root), args.sources, base_url=args.url, timeout=args.timeout):
        print(path)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with the house's one-line errors (exit status 2) instead of usage plus error."""

    def error(self, message: str):
        self.exit(2, f"metacompare: error: {self.prog}: {message}; see {self.prog} --help\n")


def bounded(kind: type, low: float, high: float):
    """An argparse ``type`` that accepts a finite ``kind`` (int or float) from ``low`` to ``high``."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {'whole number' if kind is int else 'number'}, "
                                             f"got {text!r}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"must be from {low:g} to {high:g}, got {text}")
        return value
    return parse


def _cmd_tune(args: argparse.Namespace) -> int:
    from metacompare.tune import run_tune

    for summary in run_tune(args.file, args.set, seeds=args.seeds, results_dir=args.results_dir,
                            progress=not args.no_progress):
        print(_summary_line(summary))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from metacompare.compare import compare

    report = compare(args.config, args.budget, tuned=not args.no_tune, seeds=args.seeds, overrides=args.set,
                     results_dir=args.results_dir, progress=not args.no_progress)
    print(report.read_text().split("\n\n")[1])  # the answer paragraph
    print(f"report: {report}")
    return 0


def _add_tune_and_compare(sub) -> None:
    """The ``tune`` and ``compare`` subcommands (metacompare.tune, metacompare.compare)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--seeds", type=bounded(int, 1, 100), default=None, help="training seeds per algorithm (default: tune.seeds, 3)")
    common.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field (repeatable)")
    common.add_argument("--results-dir", help="where results go (default: the config's results_dir)")
    common.add_argument("--no-progress", action="store_true", help="no progress bars")
    tune = sub.add_parser("tune", parents=[common],
                          help="the same number of Optuna trials per algorithm on validation episodes (resumable), "
                               "then the chosen settings trained with several seeds and tested once")
    tune.add_argument("file", help="config or tune file with a tune: section, e.g. experiments/compare_sine.yaml")
    tune.set_defaults(func=_cmd_tune)
    compare = sub.add_parser("compare", parents=[common],
                             help="which algorithm is best under one budget: tune, train each with several seeds, "
                                  "report the answer with paired statistics")
    compare.add_argument("config", help="config or tune file, e.g. experiments/compare_sine.yaml")
    compare.add_argument("--budget", required=True, metavar="SECONDS|work:N",
                         help="per run: training seconds (validation excluded), e.g. 300, or work in "
                              "example-passes, e.g. work:2e6")
    compare.add_argument("--no-tune", action="store_true", help="use the config's settings instead of tuning")
    compare.set_defaults(func=_cmd_compare)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="metacompare",
                     description="Compare Reptile, FOMAML and MAML on your data and budget.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="train and evaluate the run(s) of a config file")
    run.add_argument("config", help="YAML config, e.g. configs/sine.yaml")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config field (repeatable), e.g. --set inner_lr=0.1 --set omniglot.rotations=false")
    run.add_argument("--results-dir", help="where results go (default: the config's results_dir)")
    run.add_argument("--force", action="store_true", help="rerun even if this exact run has finished")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--no-report", action="store_true",
                     help="skip writing <experiment>/report/ (tables and figures) after the runs")
    run.set_defaults(func=_cmd_run)

    sweep = sub.add_parser("sweep", help="run a grid of configs in parallel (resumable); exit 1 if a run failed")
    sweep.add_argument("sweep", help="sweep file: base config + grid, e.g. experiments/sine_task_counts.yaml")
    sweep.add_argument("--workers", type=bounded(int, 1, 256), default=None,
                       help="parallel local worker processes (default: one per CPU core)")
    sweep.add_argument("--executor", choices=["local", "ray"], default="local",
                       help="local processes, or Ray tasks (pip install 'metacompare[ray]')")
    sweep.add_argument("--address", default=None, help="Ray cluster address (default: start a local instance)")
    sweep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field in every run (repeatable), e.g. --set iterations=5")
    sweep.add_argument("--results-dir", help="where results go (default: the base config's results_dir)")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar; plain lines only")
    sweep.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    sweep.set_defaults(func=_cmd_sweep)

    evaluate = sub.add_parser("evaluate", help="score a trained Omniglot model on Lake's 20 one-shot runs")
    evaluate.add_argument("checkpoint", help="a run folder results/<experiment>/<run_id>, or its model.pt")
    evaluate.add_argument("--lake-runs", required=True, metavar="DIR",
                          help="unpacked one-shot-classification/all_runs.zip (holds run01 ... run20)")
    evaluate.add_argument("--steps", type=bounded(int, 0, 100_000), default=None,
                          help="adaptation steps per run (default: the run's eval_inner_steps)")
    evaluate.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    evaluate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="override a field of the run's config, e.g. --set evaluation=non_transductive")
    evaluate.set_defaults(func=_cmd_evaluate)

    report = sub.add_parser("report", help="tables and figures of an experiment's results (report/report.md)")
    report.add_argument("results_dir", metavar="RESULTS_DIR",
                        help="an experiment folder (results/<experiment>) or a folder of them (results)")
    report.set_defaults(func=_cmd_report)

    bench = sub.add_parser("bench", help="time one meta-iteration of every implementation on the same tasks")
    bench.add_argument("--models", nargs="+", default=["conv4", "conv4_strided"], choices=["conv4", "conv4_strided"])
    bench.add_argument("--steps", nargs="+", type=bounded(int, 1, 1000), default=[1, 5], help="inner steps (one race each)")
    bench.add_argument("--ways", type=bounded(int, 1, 100), default=5)
    bench.add_argument("--shots", type=bounded(int, 1, 100), default=1)
    bench.add_argument("--query", type=bounded(int, 1, 100), default=15, help="query examples per class")
    bench.add_argument("--meta-batch", type=bounded(int, 1, 1024), default=32)
    bench.add_argument("--repeats", type=bounded(int, 1, 1000), default=5, help="timed iterations (interleaved) after two warm-ups")
    bench.add_argument("--implementations", nargs="+", default=None, metavar="NAME",
                       help="a subset to race (default: all; see metacompare.bench.IMPLEMENTATIONS)")
    bench.add_argument("--threads", type=bounded(int, 0, 1024), default=1,
                       help="torch threads per process (0: torch's default; 1 keeps ratios stable on shared cores)")
    bench.add_argument("--data-root", default=None, help="Omniglot folder for the task-sampling rate")
    bench.add_argument("--out", default="results/bench", help="folder for bench.csv, bench.png, sampling.csv")
    bench.add_argument("--quick", action="store_true", help="tiny settings and one worker process, for tests")
    bench.set_defaults(func=_cmd_bench)

    download = sub.add_parser("download", help="fetch a dataset's official files and check their MD5s")
    download.add_argument("dataset", choices=["omniglot"])
    download.add_argument("--root", default="data/omniglot", help="folder to put the zips in")
    download.add_argument("--sources", nargs="+", default=["images_background", "images_evaluation"])
    download.add_argument("--url", default=None, help="base URL to fetch from (default: the official repository)")
    download.add_argument("--timeout", type=bounded(float, 0.001, 86_400), default=60.0, help="seconds before a stalled download fails")
    download.set_defaults(func=_cmd_download)
    _add_tune_and_compare(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as err:
        if args.debug:
            raise
        print(f"metacompare: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        resumable = args.command in ("run", "sweep")
        print("metacompare: interrupted" + ("; progress is checkpointed, rerun the same command to resume"
                                            if resumable else "; nothing was finished, rerun the command"),
              file=sys.stderr)
        return 130
