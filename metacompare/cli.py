"""Command line: a thin layer that parses arguments (:mod:`metacompare.cli_options`) and calls
library functions.

Every user mistake surfaces as one line ``metacompare: error: ...`` and exit status 2; ``--debug``
shows the traceback instead; a stop (Ctrl-C) is one line and exit status 130.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from metacompare import paths
from metacompare.cli_options import OPTION_FIELDS, HelpFormatter, bounded, build_parser, check_options  # noqa: F401
from metacompare.errors import UserError


def _cmd_inspect(args: argparse.Namespace) -> int:
    from metacompare.workflows.inspect_data import inspect

    print(inspect(args.path, args.form, args.label_column, args.text_column, args.ways, args.shots, args.query,
                  verify=args.verify, overrides=args.set))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from metacompare.engines import distributed
    from metacompare.config.loading import load_experiment, with_overrides
    from metacompare.report.console import summary_line
    from metacompare.training.runner import train_and_evaluate

    configs = load_experiment(_config_or_data(args), args.set)
    if args.results_dir:
        configs = [with_overrides(c, results_dir=args.results_dir) for c in configs]
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
                print(summary_line(summary))
    if not args.no_report and distributed.is_writer():
        _reports(sorted({Path(c.results_dir) / c.experiment for c in configs}), args)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from metacompare.workflows.compare import compare

    report = compare(_config_or_data(args, args.budget), args.budget, tuned=not args.no_tune, seeds=args.seeds,
                     overrides=args.set, results_dir=args.results_dir, progress=not args.no_progress,
                     chosen_file=args.chosen, procs=args.procs, workers=args.workers or 1, executor=args.executor,
                     address=args.address, rungs=args.rungs, target=args.target)
    print(report.read_text().split("\n\n")[1])  # the answer paragraph
    print(f"report: {report}")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from metacompare.report.console import summary_line
    from metacompare.workflows.tune import run_tune

    for summary in run_tune(args.file, args.set, seeds=args.seeds, results_dir=args.results_dir,
                            progress=not args.no_progress, workers=args.workers or 1, executor=args.executor,
                            address=args.address):
        print(summary_line(summary))
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from metacompare.workflows.sweep import load_sweep, run_sweep, status_counts

    configs = load_sweep(args.sweep, args.set, results_dir=args.results_dir)
    summaries = run_sweep(configs, workers=args.workers, executor=args.executor, address=args.address,
                          progress=not args.no_progress)
    counts = status_counts(summaries)
    table = Path(configs[0].results_dir) / configs[0].experiment / "runs.csv"
    print(f"{len(summaries)} runs: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
          + f" -> {table}")
    if not args.no_report:
        _reports([table.parent], args)
    return 1 if counts.get("failed") else 0


def _cmd_report(args: argparse.Namespace) -> int:
    """Report every experiment; one that cannot be read is one error line and does not stop the others."""
    from metacompare.report.console import experiment_folders

    experiments = experiment_folders(args.results_dir)
    return 2 if _reports(experiments, args, keep_going=len(experiments) > 1 and not args.debug) else 0


def _reports(experiments: list[Path], args: argparse.Namespace, keep_going: bool = False) -> int:
    from metacompare.report.console import write_reports

    shown = not args.no_progress and (args.command != "report" or len(experiments) > 1)
    return write_reports(experiments, progress=shown, keep_going=keep_going)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from metacompare.workflows.lake import evaluate_checkpoint, format_result

    result = evaluate_checkpoint(args.checkpoint, args.lake_runs, steps=args.steps,
                                 overrides=[f"device={args.device}", *args.set])
    print(format_result(result))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from metacompare.workflows.bench import bench

    bench(args.models, args.steps, ways=args.ways, shots=args.shots, query=args.query, meta_batch=args.meta_batch,
          repeats=args.repeats, implementations=args.implementations, out_dir=args.out, threads=args.threads,
          machine=not args.no_machine, device=args.device, filters=args.filters,
          quick=args.quick, data_root=args.data_root, progress=not args.no_progress)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from metacompare.workflows.catalogue import listing

    print(listing())
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from metacompare import data
    from metacompare.data import download

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


def _config_or_data(args: argparse.Namespace, compare_budget: str | None = None) -> str:
    """The config file to run: the one given, or for ``--data PATH`` the default config for that data,
    written beside its results (:func:`metacompare.workflows.own_data.config_file`)."""
    if (args.config is None) == (args.data is None):
        raise UserError("give a config file or --data PATH (one of them); a config names its own data with "
                        "dataset: folder|table|text and user_data.root")
    if args.data is None:
        args.set = [*(f"{k}={v}" for k, v in (("ways", args.ways), ("shots", args.shots)) if v), *args.set]
        return args.config
    from metacompare.workflows.own_data import config_file

    path, raw = config_file(args.data, form=args.form, ways=args.ways or 5, shots=args.shots or 1,
                            label_column=args.label_column, text_column=args.text_column,
                            procs=args.procs if compare_budget else 1, results_dir=args.results_dir,
                            compare_budget=compare_budget)
    print(f"data: {args.data} as dataset {raw['dataset']}; config: {path}")
    return str(path)


def _speaks(about_a_stop: bool = False) -> bool:
    """Whether this process prints the line. Of the workers of ``run --procs`` (one machine, one config)
    rank 0 alone prints errors and warnings (else each line once per process) and none a stop, which
    their launcher reports; processes started otherwise (torchrun by hand, other machines) all print."""
    from metacompare.engines import distributed

    return not os.environ.get(distributed.LAUNCHED) or (distributed.is_writer() and not about_a_stop)


WARNED = "METACOMPARE_WARNED"  # the warning lines already printed, for the processes this one starts


def _warning_lines(source: str | None):
    """A ``warnings.showwarning`` printing each message once, on one line that names the user's file:
    once per command, too, when its workers (``--procs``, ``--workers``) load the same config again,
    since they inherit the lines printed so far through the environment."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        said, seen = str(message), os.environ.get(WARNED, "").split("\n")  # workers read a copy of the file
        if said not in seen and _speaks():
            os.environ[WARNED] = "\n".join([*filter(None, seen), said])
            print(f"metacompare: warning: {said}" + (f" ({source})" if source else ""), file=sys.stderr)
    return show


COMMANDS = {"inspect": _cmd_inspect, "run": _cmd_run, "compare": _cmd_compare, "tune": _cmd_tune,
            "sweep": _cmd_sweep, "report": _cmd_report, "evaluate": _cmd_evaluate, "bench": _cmd_bench,
            "list": _cmd_list, "download": _cmd_download}


def main(argv: list[str] | None = None) -> int:
    from metacompare.storage.gitstate import dirty_allowed

    args = build_parser().parse_args(argv)
    source = next((getattr(args, name) for name in ("config", "file", "sweep", "data", "path", "checkpoint")
                   if getattr(args, name, None)), None)
    previous, warnings.showwarning = warnings.showwarning, _warning_lines(source)
    warned = os.environ.get(WARNED)  # kept for this command's workers, not for the next command in this process
    try:
        check_options(args)
        with dirty_allowed(getattr(args, "allow_dirty", False)):  # every write path's guard reads it
            return COMMANDS[args.command](args)
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
        if warned is None:
            os.environ.pop(WARNED, None)
        else:
            os.environ[WARNED] = warned
