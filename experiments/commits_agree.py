"""Do two commits train the same run the same way? A study that spans sessions is resumed from
later commits than the one it started from (issue 23's seeded answer); this shows that the code
changes in between leave its runs' maths alone.

Each commit is checked out into a temporary clone and runs the same compare file there under a small
work budget on one process (``--budget work:N --no-tune --seeds 1``). Every run id the two commits
share (a run id is the hash of the run's settings) must end with the same weights and the same
per-episode test scores, compared tensor by tensor with ``torch.equal``. Run ids found at only one
commit (an algorithm or field added later) are listed, not compared.

    PYTHONPATH=. python experiments/commits_agree.py 998809e 925fd24 \\
        --file experiments/compare_omniglot_minimal_seeds.yaml --budget work:1e5 --set data_root=$PWD/../shared/data/omniglot \
        --set test_episodes=50 --set eval_episodes=10
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]


def tensors(value, prefix=""):
    """Every tensor of a saved checkpoint, by its dotted path."""
    if torch.is_tensor(value):
        yield prefix, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from tensors(item, f"{prefix}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from tensors(item, f"{prefix}[{index}]")


def train_at(commit: str, work: Path, args) -> dict[str, Path]:
    """Run the compare file at ``commit``; return {run id: run folder}."""
    tree = work / commit
    subprocess.run(["git", "clone", "-q", str(REPO), str(tree)], check=True)
    subprocess.run(["git", "-C", str(tree), "checkout", "-q", commit], check=True)
    results = work / f"results-{commit}"
    command = [sys.executable, "-m", "metacompare", "compare", args.file, "--budget", args.budget, "--no-tune",
               "--seeds", "1", "--results-dir", str(results), "--no-progress",
               *[f"--set={item}" for item in args.set]]
    subprocess.run(command, cwd=tree, check=True)
    return {path.parent.name: path.parent for path in results.glob("*/*/model.pt")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("commits", nargs=2)
    parser.add_argument("--file", default="experiments/compare_omniglot_minimal_seeds.yaml")
    parser.add_argument("--budget", default="work:1e5", help="each run's budget (default: work:1e5)")
    parser.add_argument("--set", action="append", default=[],
                        help="a field override for both, e.g. data_root=../shared/data/omniglot")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        old, new = (train_at(commit, Path(scratch), args) for commit in args.commits)
        rows = []
        for run_id in sorted(old.keys() | new.keys()):
            if run_id not in old or run_id not in new:
                rows.append({"run_id": run_id, "result": f"only at {args.commits[run_id in new]}"})
                continue
            a, b = (dict(tensors(torch.load(d[run_id] / "model.pt", weights_only=False))) for d in (old, new))
            weights = a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
            episodes = pd.read_csv(old[run_id] / "episodes.csv").equals(pd.read_csv(new[run_id] / "episodes.csv"))
            rows.append({"run_id": run_id, "result": "identical" if weights and episodes else
                         f"DIFFERENT (weights {'equal' if weights else 'differ'}, episodes {'equal' if episodes else 'differ'})"})
    print(pd.DataFrame(rows).to_string(index=False))
    return 0 if all(row["result"] == "identical" or row["result"].startswith("only") for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
