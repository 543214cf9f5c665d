"""Correctness check of the own-data path (issue 22): the folder path against the built-in Omniglot loader.

Omniglot's ``images_background_small1`` zip is unpacked (into /tmp, never the repo) as a plain two-level
folder (alphabet/character) and run twice with the same algorithms, protocol and training:

1. ``dataset: folder`` on the unpacked folder (the folder path's seeded, alphabet-disjoint split);
2. ``dataset: omniglot`` with ``omniglot.sources: [images_background_small1]``, the alphabet lists set to
   the very split the folder path makes (computed here with :func:`metacompare.data.splits.split_classes`,
   checked afterwards against the folder run's ``splits.json``), rotations off, 28 px, ink = 1.

Same ways (5), shots (1), test_query (1), seed, eval_seed, test episodes and a fixed iteration count, so
both get the same training. The table gives each path's test accuracy with its 95% interval, the
difference, whether they agree within the interval, and whether the per-episode scores are identical.

    nice -n 5 python experiments/folder_vs_builtin.py            # writes results/folder_vs_builtin/
    nice -n 5 python experiments/folder_vs_builtin.py --iterations 20 --test-episodes 20 --results-dir /tmp/x
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from metacompare.workflows import data_defaults as defaults  # noqa: E402
from metacompare.data.index import index_folder  # noqa: E402
from metacompare.data.splits import split_classes  # noqa: E402

SOURCE = "images_background_small1"
ALGORITHMS = ("reptile", "fomaml")
FRACTIONS = (0.2, 0.2)  # validation, test: what `--data` picks for this folder
SPLIT_SEED = 0


def unpack(zip_path: Path, target: Path) -> Path:
    root = target / SOURCE
    if not root.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(target)
    return root


def folder_split(root: Path) -> dict[str, list[str]]:
    """The alphabets of each split the folder path makes (group-disjoint, seeded)."""
    index = index_folder(root)
    split = split_classes(index.classes, index.groups, *FRACTIONS, SPLIT_SEED)
    alphabets = {name: sorted({index.groups[c] for c in ids}) for name, ids in split.items()}
    for name, ids in split.items():  # each split takes whole alphabets
        assert {c for c, g in enumerate(index.groups) if g in alphabets[name]} == set(ids), name
    return alphabets


def common(iterations: int, test_episodes: int) -> dict:
    per_algorithm = {"reptile": {"model": "conv4_nichol", **defaults.REPTILE},
                     "fomaml": {"model": "conv4_finn", **defaults.MAML}}
    return {"algorithm": list(ALGORITHMS), "ways": 5, "shots": 1, "test_query": 1, "iterations": iterations,
            "eval_interval": iterations, "eval_episodes": 20, "test_episodes": test_episodes,
            "test_checkpoint": "last", "checkpoint_interval": iterations, "seed": 0, "eval_seed": 2018,
            "per_algorithm": {a: per_algorithm[a] for a in ALGORITHMS}}


def configs(root: Path, data_root: Path, alphabets: dict, iterations: int, test_episodes: int) -> dict[str, dict]:
    base = common(iterations, test_episodes)
    folder = {"experiment": "folder", "dataset": "folder", **base,
              "user_data": {"root": str(root), "validation_fraction": FRACTIONS[0], "test_fraction": FRACTIONS[1],
                            "split_seed": SPLIT_SEED, "image_size": 28, "channels": 1, "invert": True}}
    builtin = {"experiment": "builtin", "dataset": "omniglot", "data_root": str(data_root), **base,
               "omniglot": {"sources": [SOURCE], "split": "alphabets", "rotations": False, "image_size": 28,
                            "download": False,
                            "train_alphabets": [f"{SOURCE}/{a}" for a in alphabets["train"]],
                            "validation_alphabets": [f"{SOURCE}/{a}" for a in alphabets["validation"]],
                            "test_alphabets": [f"{SOURCE}/{a}" for a in alphabets["test"]]}}
    return {"folder": folder, "builtin": builtin}


def run(config: Path, results_dir: Path, extra: list[str]) -> None:
    command = [sys.executable, "-m", "metacompare", "run", str(config), "--results-dir", str(results_dir),
               "--no-progress", "--no-report", *extra]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, cwd=REPO, check=True)


def run_folders(experiment: Path) -> dict[str, Path]:
    found = {}
    for summary in sorted(experiment.glob("*/summary.json")):
        row = json.loads(summary.read_text())
        found[row["algorithm"]] = summary.parent
    return found


def episodes(folder: Path) -> list[float]:
    with open(folder / "episodes.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    column = "test_accuracy" if "test_accuracy" in rows[0] else next(k for k in rows[0] if k.startswith("test_acc"))
    return [float(r[column]) for r in rows]


def same_weights(a: Path, b: Path) -> bool:
    """Whether the two runs' final networks are bit-identical (``model.pt``, written by every finished run)."""
    import torch

    wa, wb = (torch.load(f / "model.pt", map_location="cpu", weights_only=False)["algorithm"]["model"] for f in (a, b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data" / "omniglot"))
    parser.add_argument("--unpack-to", default="/tmp/folder_vs_builtin")
    parser.add_argument("--results-dir", default=str(REPO / "results" / "folder_vs_builtin"))
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--test-episodes", type=int, default=200)
    parser.add_argument("--allow-dirty", action="store_true")
    args = parser.parse_args()
    data_root, results_dir = Path(args.data_root).resolve(), Path(args.results_dir).resolve()
    root = unpack(data_root / f"{SOURCE}.zip", Path(args.unpack_to))
    alphabets = folder_split(root)
    print("folder split (alphabets):", json.dumps(alphabets), flush=True)
    staged = Path(args.unpack_to) / "configs"
    staged.mkdir(parents=True, exist_ok=True)
    extra = ["--allow-dirty"] if args.allow_dirty else []
    for name, raw in configs(root, data_root, alphabets, args.iterations, args.test_episodes).items():
        path = staged / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        run(path, results_dir, extra)
    for name in ("folder", "builtin"):  # the configs that ran, beside their results
        shutil.copy(staged / f"{name}.yaml", results_dir / name / "config_that_ran.yaml")

    folder_runs, builtin_runs = run_folders(results_dir / "folder"), run_folders(results_dir / "builtin")
    recorded = json.loads((next(iter(folder_runs.values())) / "splits.json").read_text())["classes"]
    recorded_alphabets = {k: sorted({c.split("/")[0] for c in v}) for k, v in recorded.items()}
    assert recorded_alphabets == alphabets, (recorded_alphabets, alphabets)

    lines = ["| algorithm | folder path | built-in loader | folder - built-in | within CI | per-episode scores "
             "| final weights |", "|---|---|---|---|---|---|---|"]
    for algorithm in ALGORITHMS:
        a = json.loads((folder_runs[algorithm] / "summary.json").read_text())
        b = json.loads((builtin_runs[algorithm] / "summary.json").read_text())
        ea, eb = episodes(folder_runs[algorithm]), episodes(builtin_runs[algorithm])
        same = ea == eb
        diffs = [x - y for x, y in zip(ea, eb)]
        mean = sum(diffs) / len(diffs)
        sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)) if len(diffs) > 1 else 0.0
        paired = 1.96 * sd / math.sqrt(len(diffs))
        gap = a["test_accuracy_mean"] - b["test_accuracy_mean"]
        within = abs(gap) <= min(a["test_accuracy_ci95"], b["test_accuracy_ci95"])
        lines.append(f"| {algorithm} | {100 * a['test_accuracy_mean']:.2f}% ± {100 * a['test_accuracy_ci95']:.2f} "
                     f"| {100 * b['test_accuracy_mean']:.2f}% ± {100 * b['test_accuracy_ci95']:.2f} "
                     f"| {100 * gap:+.2f} (paired ± {100 * paired:.2f}) | {'yes' if within else 'NO'} "
                     f"| {'identical' if same else f'{sum(x != y for x, y in zip(ea, eb))} of {len(ea)} differ'} "
                     f"| {'identical' if same_weights(folder_runs[algorithm], builtin_runs[algorithm]) else 'differ'} |")
    table = "\n".join(lines)
    header = (f"{SOURCE} unpacked as a folder vs the built-in loader; split {json.dumps(alphabets)}; 5-way 1-shot, "
              f"test_query 1, {args.iterations} iterations, {args.test_episodes} test episodes, seed 0, eval_seed 2018; "
              f"commit {a.get('git_commit', '?')}{' +dirty' if a.get('dirty') else ''}\n\n")
    (results_dir / "table.md").write_text(header + table + "\n")
    print(header + table)


if __name__ == "__main__":
    main()
