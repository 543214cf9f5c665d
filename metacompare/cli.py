"""Command line: a thin layer that parses arguments and calls library functions.

Every user mistake surfaces as one line ``metacompare: error: ...`` and exit status 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
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
    return 0


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


def _cmd_download(args: argparse.Namespace) -> int:
    from metacompare.download import download_omniglot

    for path in download_omniglot(Path(args.root), args.sources, base_url=args.url, timeout=args.timeout):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metacompare",
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
    run.set_defaults(func=_cmd_run)

    download = sub.add_parser("download", help="fetch a dataset's official files and check their MD5s")
    download.add_argument("dataset", choices=["omniglot"])
    download.add_argument("--root", default="data/omniglot", help="folder to put the zips in")
    download.add_argument("--sources", nargs="+", default=["images_background", "images_evaluation"])
    download.add_argument("--url", default=None, help="base URL to fetch from (default: the official repository)")
    download.add_argument("--timeout", type=float, default=60.0, help="seconds before a stalled download fails")
    download.set_defaults(func=_cmd_download)
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
        print("metacompare: interrupted; progress is checkpointed, rerun the same command to resume",
              file=sys.stderr)
        return 130
