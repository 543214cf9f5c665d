"""Command line: a thin layer that parses arguments and calls library functions.

Every user mistake surfaces as one line ``metacompare: error: ...`` and exit status 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from pathlib import Path

from tqdm import tqdm

from metacompare import paths
from metacompare.errors import UserError


def _cmd_run(args: argparse.Namespace) -> int:
    from metacompare import distributed
    from metacompare.config import load_experiment, with_overrides
    from metacompare.runner import train_and_evaluate

    configs = load_experiment(_config_or_data(args, lambda experiment: experiment), args.set)
    if args.results_dir:
        configs = [with_overrides(c, results_dir=args.results_dir) for c in configs]
    _guard_provenance(configs, args.allow_dirty)
    if args.procs > 1:  # every config checked here, once, before torchrun starts any worker
        for cfg in configs:
            distributed.check(cfg, args.procs)
        for cfg in configs:
            status = distributed.run_config(cfg, args.procs, not args.no_progress, args.force)
            if status:
                return status
    else:
        for cfg in configs:
            summary = train_and_evaluate(cfg, progress=not args.no_progress, force=args.force)
            if distributed.is_writer():
                print(_summary_line(summary))
    if not args.no_report and distributed.is_writer():
        _write_reports(sorted({Path(c.results_dir) / c.experiment for c in configs}), not args.no_progress)
    return 0


def _guard_provenance(configs: list, allow_dirty: bool) -> None:
    """Refuse (or, with --allow-dirty, loudly allow) recording results from uncommitted code."""
    from metacompare.provenance import guard

    guard(sorted({Path(c.results_dir) / c.experiment for c in configs}), allow_dirty=allow_dirty)


def _write_reports(experiment_dirs: list[Path], progress: bool = True) -> None:
    from metacompare.report import write_report

    bar = tqdm(experiment_dirs, desc="report", unit="experiment", disable=not progress,
               file=sys.stderr, dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30.0)
    for directory in bar:
        bar.set_postfix_str(directory.name)
        bar.write(f"report: {write_report(directory)}", file=sys.stdout)


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
    bar = tqdm(experiments, desc="report", unit="experiment", disable=args.no_progress or len(experiments) == 1,
               file=sys.stderr,
               dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30.0)
    for directory in bar:
        bar.set_postfix_str(directory.name)
        try:
            read_runs(directory)  # the results table, strictly: a broken one is one line, not a traceback
            bar.write(f"report: {write_report(directory)}", file=sys.stdout)
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
    _guard_provenance(configs, args.allow_dirty)
    summaries = run_sweep(configs, workers=args.workers, executor=args.executor, address=args.address,
                          progress=not args.no_progress)
    counts = status_counts(summaries)
    table = Path(configs[0].results_dir) / configs[0].experiment / "runs.csv"
    print(f"{len(summaries)} runs: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
          + f" -> {table}")
    if not args.no_report:
        _write_reports([table.parent], not args.no_progress)
    return 1 if counts.get("failed") else 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from metacompare.workflows.lake import evaluate_checkpoint, format_result

    result = evaluate_checkpoint(args.checkpoint, args.lake_runs, steps=args.steps,
                                 overrides=[f"device={args.device}", *args.set])
    print(format_result(result))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from metacompare import provenance, results
    from metacompare.bench import bench

    state = provenance.guard([Path(args.out)], allow_dirty=args.allow_dirty)  # results/bench is committed too
    bench(args.models, args.steps, ways=args.ways, shots=args.shots, query=args.query, meta_batch=args.meta_batch,
          repeats=args.repeats, implementations=args.implementations, out_dir=args.out, threads=args.threads,
          machine=not args.no_machine, device=args.device, filters=args.filters,
          quick=args.quick, data_root=args.data_root, progress=not args.no_progress)
    results.save_json(Path(args.out) / "provenance.json", provenance.record(Path(args.out), state))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from metacompare.catalogue import catalogue

    for section, entries in catalogue().items():
        print(f"{section}:")
        width = max(len(name) for name, _ in entries)
        for name, text in entries:
            print(f"  {name:<{width}}  {text}")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from metacompare import data, download

    root = Path(args.root or f"data/{args.dataset}")
    if data.source_of(args.dataset).files_per_split:
        splits = args.sources or ["train", "validation", "test"]
        mirrors = {s: [f"{args.url.rstrip('/')}/mini-imagenet-cache-{s}.pkl"] for s in splits} if args.url else None
        paths = download.download_miniimagenet(root, splits, mirrors, timeout=args.timeout)
    else:
        paths = download.download_omniglot(root, args.sources or ["images_background", "images_evaluation"],
                                           base_url=args.url, timeout=args.timeout)
    print(*paths, sep="\n")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with the house's one-line errors (exit status 2) instead of usage plus error, and
    options named in full: ``--proc 2`` is an error, not ``--procs 2``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

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


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: ...)`` to every option's help, unless the help already says its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        return text if "default" in text else super()._get_help_string(action)


def _subcommand(sub, name: str, text: str, func) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=text, description=text, formatter_class=HelpFormatter)
    parser.set_defaults(func=func)
    return parser


def _common_run_options(parser: argparse.ArgumentParser, scope: str) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config field {scope} (repeatable), e.g. --set inner_lr=0.1 "
                             f"--set omniglot.rotations=false --set tracker=mlflow (default: none)")
    parser.add_argument("--results-dir", help="where results go (default: the config's results_dir, results/)")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="record into the repository's results/ even though the code has uncommitted "
                             "changes; the runs are then marked dirty (default: refuse)")
    parser.add_argument("--no-progress", action="store_true", help="plain lines instead of progress bars")
    parser.add_argument("--no-report", action="store_true",
                        help="skip writing <experiment>/report/ (tables and figures) at the end")


def _cmd_tune(args: argparse.Namespace) -> int:
    from metacompare.tune import run_tune

    for summary in run_tune(args.file, args.set, seeds=args.seeds, results_dir=args.results_dir,
                            progress=not args.no_progress, workers=args.workers, executor=args.executor,
                            address=args.address):
        print(_summary_line(summary))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from metacompare import budget
    from metacompare.compare import compare

    label = budget.label(budget.parse_budget(args.budget))
    path = _config_or_data(args, lambda experiment: f"{experiment}_compare_{label}")
    report = compare(path, args.budget, tuned=not args.no_tune, seeds=args.seeds, overrides=args.set,
                     results_dir=args.results_dir, progress=not args.no_progress, chosen_file=args.chosen,
                     procs=args.procs, workers=args.workers, executor=args.executor, address=args.address,
                     rungs=args.rungs, target=args.target)
    print(report.read_text().split("\n\n")[1])  # the answer paragraph
    print(f"report: {report}")
    return 0


def _config_or_data(args: argparse.Namespace, folder_of) -> str:
    """The config file to run: the one given, or for ``--data PATH`` the default config for that data
    (metacompare.data.defaults), written to ``<results>/<folder_of(experiment)>/data_config.yaml``."""
    if (args.config is None) == (args.data is None):
        raise UserError("give a config file or --data PATH (one of them); a config names its own data with "
                        "dataset: folder|table|text and user_data.root")
    if args.data is None:
        if args.ways or args.shots:
            args.set = [*(f"{k}={v}" for k, v in (("ways", args.ways), ("shots", args.shots)) if v), *args.set]
        return args.config
    from metacompare.data.defaults import data_config, write_config

    raw = data_config(args.data, args.form, args.ways or 5, args.shots or 1, args.label_column, args.text_column,
                      procs=getattr(args, "procs", 1) if args.func is _cmd_compare else 1)
    folder = Path(args.results_dir or "results") / folder_of(raw["experiment"])
    path = write_config(raw, folder / "data_config.yaml")
    print(f"data: {args.data} as dataset {raw['dataset']}; config: {path}")
    return str(path)


def _add_config_or_data(parser: argparse.ArgumentParser, verb: str, config_help: str) -> None:
    """``run`` and ``compare`` take a config file or, instead, ``--data PATH`` and its options."""
    parser.add_argument("config", nargs="?", default=None, help=f"{config_help} (default: none; then give --data)")
    parser.add_argument("--data", metavar="PATH", default=None,
                        help=f"{verb} on your own image folder, CSV/Parquet table or text table, with no config "
                             "file (default: none; see docs/guide/own-data.md)")
    _data_options(parser)


def _data_options(parser: argparse.ArgumentParser, tasks: bool = True) -> None:
    """``--data PATH`` and what describes the data (metacompare.data.user), for run, compare and inspect."""
    parser.add_argument("--form", choices=["folder", "table", "text"], default=None,
                        help="the data's form (default: detected: a folder is images, a table with a text column "
                             "is texts, any other table is vectors)")
    parser.add_argument("--label-column", default="label", help="the table's label column")
    parser.add_argument("--text-column", default="text", help="the table's text column (dataset: text)")
    if tasks:
        parser.add_argument("--ways", type=bounded(int, 1, 1000), default=None, help="classes per task (default: 5 with --data)")
        parser.add_argument("--shots", type=bounded(int, 1, 1000), default=None,
                            help="support examples per class (default: 1 with --data)")


def _cmd_inspect(args: argparse.Namespace) -> int:
    from metacompare.data.inspect import inspect

    print(inspect(args.path, args.form, args.label_column, args.text_column, args.ways, args.shots, args.query,
                  verify=args.verify, overrides=args.set))
    return 0


def _add_inspect(sub) -> None:
    """The ``inspect`` subcommand (metacompare.data.inspect)."""
    inspect = _subcommand(sub, "inspect", "what an image folder or a CSV/Parquet table holds, the split it would "
                                          "get and the largest task it serves; exit 2 if it cannot be used", _cmd_inspect)
    inspect.add_argument("path", help="a folder of class subfolders (or group/class), or a .csv/.parquet table")
    _data_options(inspect, tasks=False)
    inspect.add_argument("--ways", type=bounded(int, 1, 1000), default=5, help="classes per task to check")
    inspect.add_argument("--shots", type=bounded(int, 1, 1000), default=1, help="support examples per class to check")
    inspect.add_argument("--query", type=bounded(int, 1, 1000), default=1, help="query examples per class to check")
    inspect.add_argument("--verify", action="store_true", help="decode every image to find corrupt files (slower)")
    inspect.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override a field, e.g. --set user_data.test_fraction=0.3 (default: none)")


def _add_tune_and_compare(sub) -> None:
    """The ``tune`` and ``compare`` subcommands (metacompare.tune, metacompare.compare)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--seeds", type=bounded(int, 1, 100), default=None, help="training seeds per algorithm (default: tune.seeds, 3)")
    common.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field (repeatable)")
    common.add_argument("--results-dir", help="where results go (default: the config's results_dir)")
    common.add_argument("--no-progress", action="store_true", help="no progress bars")
    _executor_options(common, 1, "parallel local worker processes for the tuning trials and the final runs, "
                                 "one torch thread per process, the algorithms in turn; at most one process per core "
                                 "(compare: workers x --procs) (default: 1, one after another in this process)")
    text = ("the same number of Optuna trials per algorithm on validation episodes (resumable), "
            "then the chosen settings trained with several seeds and tested once")
    tune = sub.add_parser("tune", parents=[common], formatter_class=HelpFormatter, help=text, description=text)
    tune.add_argument("file", help="config or tune file with a tune: section, e.g. experiments/compare_sine.yaml")
    tune.set_defaults(func=_cmd_tune)
    text = ("which algorithm is best under one budget: tune, train each with several seeds, "
            "report the answer with paired statistics")
    compare = sub.add_parser("compare", parents=[common], formatter_class=HelpFormatter, help=text, description=text)
    _add_config_or_data(compare, "compare", "config or tune file, e.g. experiments/compare_sine.yaml")
    compare.add_argument("--budget", required=True, metavar="SECONDS|cpu:SECONDS|work:N",
                         help="per run: training seconds (validation excluded), e.g. 300; the same in this "
                              "process's CPU time, e.g. cpu:300 (not charged for waiting for a core; equal work only on an idle machine); or work in "
                              "example-passes, e.g. work:2e6")
    settings = compare.add_mutually_exclusive_group()
    settings.add_argument("--no-tune", action="store_true", help="use the config's settings instead of tuning")
    settings.add_argument("--chosen", metavar="FILE", default=None,
                          help="take each algorithm's setting from an earlier tune's record instead of tuning, "
                               "e.g. results/sine_compare_cpu300s/tune/search.yaml (default: tune)")
    compare.add_argument("--procs", type=bounded(int, 1, 256), default=1,
                         help="train each final run data-parallel on this many local processes where its engine "
                              "allows (inner_state: carry needs inner_chains >= N); a cpu: budget counts every process's time")
    compare.add_argument("--rungs", type=bounded(int, 1, 16), default=None,
                         help="the budget ladder: also score every algorithm at budget/2, budget/4, ... (this many "
                              "rungs, the full budget included), as snapshots of the same runs; 1: the full budget "
                              "only (default: the config's budget_rungs, else 5)")
    compare.add_argument("--target", type=bounded(float, 0, 1e12), default=None,
                         help="time-to-target: the smallest rung budget reaching this test accuracy (a fraction, "
                              "0.9 for 90%%) or MSE (default: 95%% of the best final score)")
    compare.set_defaults(func=_cmd_compare)


def _executor_options(parser: argparse.ArgumentParser, workers: int | None, workers_help: str) -> None:
    """``--workers``, ``--executor``, ``--address``: where sweep, tune and compare train their runs
    (metacompare.executors)."""
    parser.add_argument("--workers", type=bounded(int, 1, 256), default=workers, help=workers_help)
    parser.add_argument("--executor", choices=["local", "ray"], default="local",
                        help="local processes, or Ray tasks (pip install 'metacompare[ray]')")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: start a local instance)")


def _add_run_and_sweep(sub) -> None:
    """The ``run`` and ``sweep`` subcommands (metacompare.runner, metacompare.sweep)."""
    run = _subcommand(sub, "run", "train and evaluate the run(s) of a config file, then write the report", _cmd_run)
    _add_config_or_data(run, "run", "YAML config, e.g. configs/sine.yaml")
    _common_run_options(run, "")
    run.add_argument("--force", action="store_true", help="rerun even if this exact run has finished")
    run.add_argument("--procs", type=bounded(int, 1, 256), default=1,
                     help="split each meta-batch over this many local processes (torchrun on 127.0.0.1; "
                          "same results as one process); see docs/guide/distributed.md (default: 1)")

    sweep = _subcommand(sub, "sweep", "run a grid of configs in parallel (resumable); exit 1 if a run failed",
                        _cmd_sweep)
    sweep.add_argument("sweep", help="sweep file: base config + grid, e.g. experiments/sine_task_counts.yaml")
    _executor_options(sweep, None, "parallel local worker processes (default: one per CPU core)")
    _common_run_options(sweep, "in every run")


def _add_evaluate_and_report(sub) -> None:
    """The ``evaluate`` (metacompare.workflows.lake) and ``report`` (metacompare.report) subcommands."""
    evaluate = _subcommand(sub, "evaluate", "score a trained Omniglot model on Lake's 20 one-shot runs", _cmd_evaluate)
    evaluate.add_argument("checkpoint", help="a run folder results/<experiment>/<run_id>, or its model.pt")
    evaluate.add_argument("--lake-runs", required=True, metavar="DIR",
                          help="unpacked one-shot-classification/all_runs.zip (holds run01 ... run20); required, "
                               "no default")
    evaluate.add_argument("--steps", type=bounded(int, 0, 100_000), default=None,
                          help="adaptation steps per run (default: the run's eval_inner_steps)")
    evaluate.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    evaluate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="override a field of the run's config, e.g. --set evaluation=non_transductive "
                               "(default: none)")

    report = _subcommand(sub, "report", "tables and figures of an experiment's results (report/report.md, .html)",
                         _cmd_report)
    report.add_argument("results_dir", metavar="RESULTS_DIR",
                        help="an experiment folder (results/<experiment>) or a folder of them (results)")
    report.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_bench(sub) -> None:
    """The ``bench`` subcommand (metacompare.bench)."""
    bench = _subcommand(sub, "bench", "time one meta-iteration of every implementation on the same tasks "
                                      "(writes bench.csv, bench.png)", _cmd_bench)
    bench.add_argument("--models", nargs="+", default=["conv4", "conv4_strided"],
                       choices=["conv4", "conv4_strided", "resnet12"],
                       help="networks to race on (one race per model and inner-step count)")
    bench.add_argument("--filters", type=bounded(int, 1, 4096), default=None,
                       help="conv4's width; resnet12's first block's, the others in MetaOptNet's 1:2.5:5:10 "
                            "(default: 64, 64-160-320-640; --quick: 8)")
    bench.add_argument("--steps", nargs="+", type=bounded(int, 1, 1000), default=[1, 5], help="inner steps (one race each)")
    bench.add_argument("--ways", type=bounded(int, 1, 100), default=5, help="classes per task (N-way)")
    bench.add_argument("--shots", type=bounded(int, 1, 100), default=1, help="support examples per class (K-shot)")
    bench.add_argument("--query", type=bounded(int, 1, 100), default=15, help="query examples per class")
    bench.add_argument("--meta-batch", type=bounded(int, 1, 1024), default=32, help="tasks per meta-iteration")
    bench.add_argument("--repeats", type=bounded(int, 1, 1000), default=5, help="timed iterations (interleaved) after two warm-ups")
    bench.add_argument("--implementations", nargs="+", default=None, metavar="NAME",
                       help="a subset to race (default: all; `metacompare list` names them)")
    bench.add_argument("--threads", type=bounded(int, 0, 1024), default=1,
                       help="torch threads per process (0: torch's default; 1 keeps ratios stable on shared cores)")
    bench.add_argument("--data-root", default=None,
                       help="Omniglot folder for the task-sampling rate (default: the data_root of "
                            "configs/omniglot_minimal.yaml)")
    bench.add_argument("--out", default="results/bench", help="folder for bench.csv, bench.png, sampling.csv")
    bench.add_argument("--quick", action="store_true", help="tiny settings and one worker process, for tests")
    bench.add_argument("--no-machine", action="store_true",
                       help="skip the whole-machine race (the peers at torch's default threads against metacompare "
                            "on one process per core; bench_machine.csv)")
    bench.add_argument("--device", default="cpu", help="cpu, or cuda / cuda:N to race on a GPU")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    bench.add_argument("--allow-dirty", action="store_true",
                       help="write into the repository's results/ even though the code has uncommitted changes "
                            "(provenance.json then says dirty: true) (default: refuse)")


def _add_download_and_list(sub) -> None:
    """The ``download`` (metacompare.download) and ``list`` subcommands."""
    download = _subcommand(sub, "download", "fetch a dataset's files: Omniglot's official zips (MD5-checked), "
                           "learn2learn's mini-ImageNet caches (from its mirrors)", _cmd_download)
    download.add_argument("dataset", choices=["omniglot", "miniimagenet"], help="dataset to fetch")
    download.add_argument("--root", default=None, help="folder to put the files in (default: data/DATASET)")
    download.add_argument("--sources", nargs="+", default=None,
                          help="which files: Omniglot's zips (default: images_background images_evaluation) or "
                               "mini-ImageNet's splits (default: train validation test)")
    download.add_argument("--url", default=None, help="base URL to fetch from (default: Omniglot's official "
                                                      "repository; mini-ImageNet: Zenodo, then Dropbox)")
    download.add_argument("--timeout", type=bounded(float, 0.001, 86_400), default=60.0, help="seconds before a stalled download fails")
    _subcommand(sub, "list", "list the registered algorithms, backends, datasets, models, engines and trackers",
                _cmd_list)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="metacompare", formatter_class=HelpFormatter,
                     description="Compare Reptile, FOMAML and MAML on your data and budget.",
                     epilog="`metacompare COMMAND --help` explains a command; "
                            "`metacompare list` shows what can be chosen.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser.set_defaults(commands=sub.choices)

    _add_run_and_sweep(sub)
    _add_evaluate_and_report(sub)
    _add_bench(sub)
    _add_download_and_list(sub)
    _add_tune_and_compare(sub)
    _add_inspect(sub)
    return parser


# Options that set config fields, and the fields each sets: a --set of one of them is refused (see
# config.refuse_set_twice), so the console, experiment name, written config and training agree.
OPTION_FIELDS = {"data": ("user_data.root", "data_root", "dataset"), "form": ("dataset",),
                 "label_column": ("user_data.label_column",), "text_column": ("user_data.text_column",),
                 "ways": ("ways",), "shots": ("shots",), "query": ("query",), "results_dir": ("results_dir",),
                 "device": ("device",), "steps": ("eval_inner_steps",),
                 "budget": ("budget.seconds", "budget.cpu_seconds", "budget.work")}


def _check_options(args: argparse.Namespace) -> None:
    """The one point where the command's own options meet its ``--set`` overrides."""
    if not hasattr(args, "set"):
        return
    from metacompare.config import refuse_set_twice

    command = args.commands[args.command]
    refuse_set_twice({f"--{dest.replace('_', '-')}": (fields, getattr(args, dest))
                      for dest, fields in OPTION_FIELDS.items()
                      if getattr(args, dest, None) not in (None, command.get_default(dest))}, args.set)


def _speaks(about_a_stop: bool = False) -> bool:
    """Whether this process prints the line. Of the workers of ``run --procs`` (one machine, one config)
    rank 0 alone prints errors and warnings (else each line once per process) and none a stop, which
    their launcher reports; processes started otherwise (torchrun by hand, other machines) all print."""
    from metacompare import distributed

    return not os.environ.get(distributed.LAUNCHED) or (distributed.is_writer() and not about_a_stop)


def _warning_lines(source: str | None):
    """A ``warnings.showwarning`` printing each message once, on one line that names the user's file."""
    seen: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = f"metacompare: warning: {message}" + (f" ({source})" if source else "")
        if text not in seen and _speaks():
            seen.add(text)
            print(text, file=sys.stderr)
    return show


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    source = next((getattr(args, name) for name in ("config", "file", "sweep", "data", "path", "checkpoint")
                   if getattr(args, name, None)), None)
    previous, warnings.showwarning = warnings.showwarning, _warning_lines(source)
    try:
        _check_options(args)
        return args.func(args)
    except UserError as err:
        if args.debug:
            raise
        if _speaks():
            print(f"metacompare: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a path beyond the system's limits, a dangling link, a special file
        line = paths.explain(err)
        if line is None or args.debug:
            raise
        print(f"metacompare: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        if args.debug:
            raise
        resumable = args.command in ("run", "sweep", "tune", "compare")
        said = getattr(err, "user_message", "") or (  # a stopped compare says what it keeps
            "progress is checkpointed, rerun the same command to resume" if resumable
            else "nothing was finished, rerun the command")
        if _speaks(about_a_stop=True):
            print(f"metacompare: interrupted; {said}", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = previous
