"""The command line's options: every command's parser, the flags several commands share declared
once as argparse parent parsers (:func:`_shared`), and the table of options that set config fields.

Commands are listed in the order a user meets them; what each does is in :mod:`metacompare.cli`.
"""

from __future__ import annotations

import argparse
import math

from metacompare.errors import UserError


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


class _Version(argparse.Action):
    """``--version``: the package's version and the commit of its code, asked of git only when printed."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, argparse.SUPPRESS, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from metacompare.storage.provenance import version_text

        print(version_text())
        parser.exit()


class _TopParser(_Parser):
    """The top-level parser, whose help names every registered algorithm (read when help is asked for:
    the registry imports torch)."""

    def format_help(self) -> str:
        from metacompare.algorithms import ALGORITHMS

        self.epilog = (f"algorithms: {', '.join(sorted(ALGORITHMS))}. `metacompare COMMAND --help` explains a "
                       f"command; `metacompare list` shows everything that can be chosen.")
        return super().format_help()


def _shared() -> dict[str, argparse.ArgumentParser]:
    """The flags several commands share, each declared once as a parent parser; a command names the
    parents it takes, and every command then holds the same option."""
    shared = {name: _Parser(add_help=False) for name in ("set", "progress", "dirty", "results", "no_report", "form",
                                                         "config_or_data", "procs", "seeds", "executor", "device")}
    shared["set"].add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=(
        "override a config field (repeatable), e.g. --set inner_lr=0.1 --set omniglot.rotations=false "
        "--set tracker=mlflow (default: none)"))
    shared["progress"].add_argument("--no-progress", action="store_true", help="plain lines instead of progress bars")
    shared["dirty"].add_argument("--allow-dirty", action="store_true", help=(
        "record into the repository's results/ even though the code has uncommitted changes; the results are "
        "then marked dirty (default: refuse)"))
    shared["results"].add_argument("--results-dir",
                                   help="where results go (default: the config's results_dir, results/)")
    shared["no_report"].add_argument("--no-report", action="store_true",
                                     help="skip writing <experiment>/report/ (tables and figures) at the end")
    form = shared["form"]
    form.add_argument("--form", choices=["folder", "table", "text"], default=None, help=(
        "the data's form (default: detected: a folder is images, a table with a text column is texts, any other "
        "table is vectors)"))
    form.add_argument("--label-column", default="label", help="the table's label column")
    form.add_argument("--text-column", default="text", help="the table's text column (dataset: text)")
    data, tasks = shared["config_or_data"], bounded(int, 1, 1000)
    data.add_argument("config", nargs="?", default=None, help=(
        "YAML config (or, for compare, a tune file), e.g. configs/sine.yaml or experiments/compare_sine.yaml "
        "(default: none; then give --data)"))
    data.add_argument("--data", metavar="PATH", default=None, help=(
        "run on your own image folder, CSV/Parquet table or text table, with no config file (default: none; "
        "see docs/guide/own-data.md)"))
    data.add_argument("--ways", type=tasks, default=None, help="classes per task (default: 5 with --data)")
    data.add_argument("--shots", type=tasks, default=None, help="support examples per class (default: 1 with --data)")
    shared["procs"].add_argument("--procs", type=bounded(int, 1, 256), default=1, help=(
        "train each run data-parallel on this many local processes (torchrun on 127.0.0.1; same results as one "
        "process; compare: its final runs, where the engine allows, inner_state: carry needing inner_chains >= N; "
        "a cpu: budget counts every process's time); see docs/guide/distributed.md"))
    shared["seeds"].add_argument("--seeds", type=bounded(int, 1, 100), default=None,
                                 help="training seeds per algorithm (default: tune.seeds, 3)")
    executor = shared["executor"]
    executor.add_argument("--workers", type=bounded(int, 1, 256), default=None, help=(
        "parallel local worker processes, one torch thread each; tune and compare: for the tuning trials and the "
        "final runs, the algorithms in turn, at most one process per core (workers x --procs) (default: sweep: "
        "one per CPU core; tune, compare: 1, one after another in this process)"))
    executor.add_argument("--executor", choices=["local", "ray"], default="local",
                          help="local processes, or Ray tasks (pip install 'metacompare[ray]')")
    executor.add_argument("--address", default=None,
                          help="Ray cluster address, with --executor ray (default: start a local instance)")
    shared["device"].add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    return shared


def build_parser() -> argparse.ArgumentParser:
    parser = _TopParser(prog="metacompare", formatter_class=HelpFormatter,
                        description="Compare Reptile, FOMAML, MAML and more on your data and budget.")
    parser.add_argument("--version", action=_Version, help="print the version (and the code's git commit) and exit")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    parser.set_defaults(commands=sub.choices)
    shared = _shared()

    def command(name: str, text: str, *parents: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, formatter_class=HelpFormatter,
                              parents=[shared[p] for p in parents])

    inspect = command("inspect", "what an image folder or a CSV/Parquet table holds, the split it "
                      "would get and the largest task it serves; exit 2 if it cannot be used", "form", "set")
    _inspect_options(inspect)
    run = command("run", "train and evaluate the run(s) of a config file, then write the report",
                  "config_or_data", "form", "set", "results", "dirty", "procs", "progress", "no_report")
    run.add_argument("--force", action="store_true", help="rerun even if this exact run has finished")

    compare = command("compare", "which algorithm is best under one budget: tune, train each with "
                      "several seeds, report the answer with paired statistics", "config_or_data", "form", "set",
                      "results", "dirty", "seeds", "procs", "executor", "progress")
    _compare_options(compare)
    tune = command("tune", "the same number of Optuna trials per algorithm on validation episodes "
                   "(resumable), then the chosen settings trained with several seeds and tested once",
                   "set", "results", "dirty", "seeds", "executor", "progress")
    tune.add_argument("file", help="config or tune file with a tune: section, e.g. experiments/compare_sine.yaml")

    sweep = command("sweep", "run a grid of configs in parallel (resumable); exit 1 if a run failed",
                    "set", "results", "dirty", "executor", "progress", "no_report")
    sweep.add_argument("sweep", help="sweep file: base config + grid, e.g. experiments/sine_task_counts.yaml")

    report = command("report", "tables and figures of an experiment's results (report/report.md, "
                     ".html)", "progress")
    report.add_argument("results_dir", metavar="RESULTS_DIR",
                        help="an experiment folder (results/<experiment>) or a folder of them (results)")

    evaluate = command("evaluate", "score a trained Omniglot model on Lake's 20 one-shot runs",
                       "set", "device")
    evaluate.add_argument("checkpoint", help="a run folder results/<experiment>/<run_id>, or its model.pt")
    evaluate.add_argument("--lake-runs", required=True, metavar="DIR", help=(
        "unpacked one-shot-classification/all_runs.zip (holds run01 ... run20); required, no default"))
    evaluate.add_argument("--steps", type=bounded(int, 0, 100_000), default=None,
                          help="adaptation steps per run (default: the run's eval_inner_steps)")

    _bench_options(command("bench", "time one meta-iteration of every implementation on the same "
                           "tasks (writes bench.csv, bench.png)", "device", "dirty", "progress"))
    command("list", "list the registered algorithms, backends, datasets, models, engines and trackers")

    download = command("download", "fetch a dataset's files: Omniglot's official zips (MD5-checked), "
                       "learn2learn's mini-ImageNet caches (from its mirrors)")
    _download_options(download)
    return parser


def _inspect_options(inspect: argparse.ArgumentParser) -> None:
    """``inspect``'s own options."""
    count = bounded(int, 1, 1000)
    inspect.add_argument("path", help="a folder of class subfolders (or group/class), or a .csv/.parquet table")
    inspect.add_argument("--ways", type=count, default=5, help="classes per task to check")
    inspect.add_argument("--shots", type=count, default=1, help="support examples per class to check")
    inspect.add_argument("--query", type=count, default=1, help="query examples per class to check")
    inspect.add_argument("--verify", action="store_true", help="decode every image to find corrupt files (slower)")


def _compare_options(compare: argparse.ArgumentParser) -> None:
    """``compare``'s own options: the budget, where the settings come from, the budget ladder."""
    compare.add_argument("--budget", required=True, metavar="SECONDS|cpu:SECONDS|work:N", help=(
        "per run: training seconds (validation excluded), e.g. 300; the same in this process's CPU time, e.g. "
        "cpu:300 (not charged for waiting for a core; equal work only on an idle machine); or work in "
        "example-passes, e.g. work:2e6"))
    settings = compare.add_mutually_exclusive_group()
    settings.add_argument("--no-tune", action="store_true", help="use the config's settings instead of tuning")
    settings.add_argument("--chosen", metavar="FILE", default=None, help=(
        "take each algorithm's setting from an earlier tune's record instead of tuning, e.g. "
        "results/sine_compare_cpu300s/tune/search.yaml (default: tune)"))
    compare.add_argument("--rungs", type=bounded(int, 1, 16), default=None, help=(
        "the budget ladder: also score every algorithm at budget/2, budget/4, ... (this many rungs, the full "
        "budget included), as snapshots of the same runs; 1: the full budget only (default: the config's "
        "budget_rungs, else 5)"))
    compare.add_argument("--target", type=bounded(float, 0, 1e12), default=None, help=(
        "time-to-target: the smallest rung budget reaching this test accuracy (a fraction, 0.9 for 90%%) or "
        "MSE (default: 95%% of the best final score)"))


def _download_options(download: argparse.ArgumentParser) -> None:
    """``download``'s own options."""
    download.add_argument("dataset", choices=["omniglot", "miniimagenet"], help="dataset to fetch")
    download.add_argument("--root", default=None, help="folder to put the files in (default: data/DATASET)")
    download.add_argument("--sources", nargs="+", default=None, help=(
        "which files: Omniglot's zips (default: images_background images_evaluation) or mini-ImageNet's "
        "splits (default: train validation test)"))
    download.add_argument("--url", default=None, help=(
        "base URL to fetch from (default: Omniglot's official repository; mini-ImageNet: Zenodo, then Dropbox)"))
    download.add_argument("--timeout", type=bounded(float, 0.001, 86_400), default=60.0,
                          help="seconds before a stalled download fails")


def _bench_options(bench: argparse.ArgumentParser) -> None:
    """``bench``'s own options (metacompare.workflows.bench)."""
    small = bounded(int, 1, 100)
    bench.add_argument("--models", nargs="+", default=["conv4", "conv4_strided"],
                       choices=["conv4", "conv4_strided", "resnet12"],
                       help="networks to race on (one race per model and inner-step count)")
    bench.add_argument("--filters", type=bounded(int, 1, 4096), default=None, help=(
        "conv4's width; resnet12's first block's, the others in MetaOptNet's 1:2.5:5:10 (default: 64, "
        "64-160-320-640; --quick: 8)"))
    bench.add_argument("--steps", nargs="+", type=bounded(int, 1, 1000), default=[1, 5],
                       help="inner steps (one race each)")
    bench.add_argument("--ways", type=small, default=5, help="classes per task (N-way)")
    bench.add_argument("--shots", type=small, default=1, help="support examples per class (K-shot)")
    bench.add_argument("--query", type=small, default=15, help="query examples per class")
    bench.add_argument("--meta-batch", type=bounded(int, 1, 1024), default=32, help="tasks per meta-iteration")
    bench.add_argument("--repeats", type=bounded(int, 1, 1000), default=5,
                       help="timed iterations (interleaved) after two warm-ups")
    bench.add_argument("--implementations", nargs="+", default=None, metavar="NAME",
                       help="a subset to race (default: all; `metacompare list` names them)")
    bench.add_argument("--threads", type=bounded(int, 0, 1024), default=1,
                       help="torch threads per process (0: torch's default; 1 keeps ratios stable on shared cores)")
    bench.add_argument("--data-root", default=None, help=(
        "Omniglot folder for the task-sampling rate (default: the data_root of configs/omniglot_minimal.yaml)"))
    bench.add_argument("--out", default="results/bench", help="folder for bench.csv, bench.png, sampling.csv")
    bench.add_argument("--quick", action="store_true", help="tiny settings and one worker process, for tests")
    bench.add_argument("--no-machine", action="store_true", help=(
        "skip the whole-machine race (the peers at torch's default threads against metacompare on one process "
        "per core; bench_machine.csv)"))


# Options that set config fields, and the fields each sets: a --set of one of them is refused (see
# config.refuse_set_twice), so the console, experiment name, written config and training agree.
OPTION_FIELDS = {"data": ("user_data.root", "data_root", "dataset"), "form": ("dataset",),
                 "label_column": ("user_data.label_column",), "text_column": ("user_data.text_column",),
                 "ways": ("ways",), "shots": ("shots",), "query": ("query",), "results_dir": ("results_dir",),
                 "device": ("device",), "steps": ("eval_inner_steps",),
                 "budget": ("budget.seconds", "budget.cpu_seconds", "budget.work")}


def check_options(args: argparse.Namespace) -> None:
    """The one point where the command's own options meet each other and its ``--set`` overrides."""
    if getattr(args, "address", None) and args.executor != "ray":  # else the runs would train here, unasked
        raise UserError(f"--address {args.address}: a Ray cluster's address is for --executor ray; add "
                        f"--executor ray, or leave out --address to run on this machine")
    if not hasattr(args, "set"):
        return
    from metacompare.config.loading import refuse_set_twice

    command = args.commands[args.command]
    refuse_set_twice({f"--{dest.replace('_', '-')}": (fields, getattr(args, dest))
                      for dest, fields in OPTION_FIELDS.items()
                      if getattr(args, dest, None) not in (None, command.get_default(dest))}, args.set)


