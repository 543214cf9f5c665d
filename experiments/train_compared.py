"""Train one algorithm of a ``compare`` file under its budget, on several local processes.

``compare`` trains its runs one after another in one process; an algorithm whose engine is
data-parallel can use the whole machine instead. This writes the exact run ``compare`` would (same
config, same run folder), so a later ``compare ... --no-tune`` finds it done and only reports.

    python experiments/train_compared.py COMPARE_FILE BUDGET ALGORITHM [--procs N] [--seeds S]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from metacompare import budget, tune
from metacompare.config import with_overrides


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("compare_file")
    parser.add_argument("budget")
    parser.add_argument("algorithm")
    parser.add_argument("--procs", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    bound = budget.parse_budget(args.budget)
    configs, spec = tune.load(args.compare_file)
    configs = [with_overrides(c, experiment=f"{c.experiment}_compare_{budget.label(bound)}")
               for c in configs if c.algorithm == args.algorithm]
    if not configs:
        sys.exit(f"{args.compare_file}: no algorithm '{args.algorithm}'")
    for cfg in tune.final_configs(configs, {}, args.seeds, bound, spec.evaluations):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
            yaml.safe_dump(cfg.to_dict(), handle, sort_keys=False)
        command = [sys.executable, "-m", "metacompare", "run", handle.name, "--procs", str(args.procs)]
        print("+", " ".join(command), f"# {cfg.run_id()}", flush=True)
        status = subprocess.call(command)
        Path(handle.name).unlink()
        if status:
            return status
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
