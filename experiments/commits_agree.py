"""Does a change leave the numbers alone? Train a short run of each algorithm on each engine at two
commits and compare their final weights and test scores.

A refactor that moves code between modules should train every run to the same weights. Each commit is
exported (``git archive``) into a temporary folder and trained there through its own command line
(``python -m metacompare run``), with ``PYTHONPATH`` at that export: the script never imports
metacompare, so the package may be laid out differently at the two commits. Runs are tiny (sine: 3
iterations; Omniglot from the shared zips: 2) on one torch thread each, so both commits compute in the
same order and agreement is expected to the last bit; the tolerance, 1e-6, would admit a sum taken
in another order, not a changed formula.

A case is a dataset, an engine (looped, task-batched, vmap, compiled, two processes, the learn2learn
and higher backends) and an algorithm. A case one commit refuses (exit code 2) is listed as "new
only" or "old only", not compared; one that both refuse is listed as such.

    python experiments/commits_agree.py c98134f main                  # writes results/commits_agree/
    python experiments/commits_agree.py HEAD HEAD --only maml --engines sine/looped --out /tmp/agree
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-6
# Former algorithm names -> today's; a case is named by today's name, each commit gets its own.
ALIASES = {"seed_reptile": "naive_reptile", "seed_reptile_fixed": "naive_reptile_fixed"}
TINY = {"sine": ("configs/sine.yaml", ["iterations=3", "eval_interval=3", "eval_episodes=2",
                                       "test_episodes=4", "meta_batch_size=4"]),
        "omniglot": ("configs/omniglot_minimal.yaml", [
            "iterations=2", "eval_interval=1", "eval_episodes=2", "test_episodes=3", "floor_episodes=2",
            "meta_batch_size=2", "eval_inner_steps=2", "filters=8", "common_evaluation.steps=2"])}
# (dataset, engine, algorithms, --set overrides, extra flags). "all": every algorithm either commit
# registers; "backend": those whose `list` line names the backend. Batched and vmap name the algorithms
# that have (or are to have) those forms; a commit without one refuses the config. An algorithm set
# apart in its own row is one older commits refuse, so that the rest of its engine trains in one
# process. Compiling and starting torchrun take 20-60 s per run on CPU, so those engines run MAML
# (second order) and Reptile (its own outer step), the two algorithms that declare a compiled form.
ENGINES = [
    ("sine", "looped", "all", [], []),
    ("sine", "batched", ("fomaml", "maml", "maml++", "reptile"), ["batch_tasks=true"], []),
    ("sine", "batched", ("anil", "metasgd"), ["batch_tasks=true"], []),
    ("sine", "vmap", ("anil", "fomaml", "maml", "metasgd", "reptile"), ["vmap=true"], []),
    ("sine", "compiled", ("maml", "reptile"), ["compile=true"], []),
    ("sine", "compiled vmap", ("maml",), ["compile=true", "vmap=true"], []),
    ("sine", "2 processes", ("maml", "reptile"), [], ["--procs", "2"]),
    ("sine", "learn2learn", "backend", ["backend=learn2learn"], []),
    ("sine", "higher", "backend", ["backend=higher"], []),
    ("omniglot", "looped", ("maml", "reptile"), [], []),
    ("omniglot", "batched", ("maml", "reptile"), ["batch_tasks=true"], []),
    ("omniglot", "vmap", ("maml",), ["vmap=true"], []),
]


def resolve(commit: str) -> str:
    """The full hash of ``commit``; refuses (SystemExit) anything that is not a commit."""
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"commits_agree: {commit!r} is not a commit")
    return done.stdout.strip()


def export(commit: str, dest: Path) -> Path:
    """The commit's tracked files, unpacked into ``dest`` (no .git: the runs record git_commit unknown)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def metacompare(tree: Path, args: list[str]) -> subprocess.CompletedProcess:
    """``python -m metacompare ARGS`` on the commit exported at ``tree``, one torch thread."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "metacompare", *args], cwd=tree, env=env,
                          capture_output=True, text=True)


def registered(tree: Path, only: set[str]) -> dict[str, tuple[str, set[str]]]:
    """{algorithm by today's name: (its name at this commit, its backends)}, read from ``metacompare
    list``; given ``only`` (and no backend to look up), those names as given, without the list's seconds."""
    if only:
        return {ALIASES.get(name, name): (name, set()) for name in only}
    done = metacompare(tree, ["list"])
    found = re.findall(r"^\s+(\S+)\s.*\[backends: ([^\]]*)\]$", done.stdout, re.MULTILINE)
    if not found:
        raise SystemExit(f"commits_agree: `metacompare list` lists no algorithm at {tree.name}: {done.stderr[-300:]}")
    return {ALIASES.get(name, name): (name, set(backends.split(", "))) for name, backends in found}


def selected(engines: set[str], omniglot: Path) -> list[tuple]:
    """The ENGINES rows --engines names (all if none), less Omniglot's where its zips are missing."""
    rows = []
    for row in ENGINES:
        dataset, engine = row[:2]
        if engines and not {engine, f"{dataset}/{engine}"} & engines:
            continue
        if dataset == "omniglot" and not omniglot.is_dir():
            print(f"commits_agree: no Omniglot at {omniglot} (--omniglot): {dataset}/{engine} skipped", file=sys.stderr)
            continue
        rows.append(row)
    return rows


def groups(rows: list[tuple], plugins: dict[str, set[str]], only: set[str]) -> list[tuple]:
    """Each row with its algorithms: (dataset, engine, names, overrides, flags); ``plugins`` maps every
    algorithm either commit registers to the backends it runs on at either."""
    chosen = []
    for dataset, engine, picks, overrides, flags in rows:
        if picks == "all":
            names = sorted(plugins)
        elif picks == "backend":
            backend = overrides[0].split("=", 1)[1]
            names = sorted(name for name, backends in plugins.items() if backend in backends)
        else:
            names = list(picks)
        names = [name for name in names if not only or name in only]
        if names:
            chosen.append((dataset, engine, names, overrides, flags))
    return chosen


def invoke(tree: Path, out: Path, group: tuple, names: list[str], omniglot: Path) -> tuple[int, str, dict]:
    """One ``metacompare run`` of the group's algorithms ``names`` (each commit's own spelling) into
    ``out``: (exit code, last line of its errors, {algorithm by today's name: run folder})."""
    dataset, _, _, overrides, flags = group
    config, tiny = TINY[dataset]
    sets = [*tiny, *overrides, f"algorithm=[{','.join(names)}]", "tracker=none", "experiment=run"]
    if dataset == "omniglot":
        sets.append(f"data_root={omniglot.resolve()}")
    done = metacompare(tree, ["run", config, *flags, "--results-dir", str(out), "--no-progress", "--no-report",
                              *[f"--set={item}" for item in sets]])
    message = (done.stderr.strip().splitlines() or [""])[-1]
    runs = {}
    for summary in out.glob("run/*/summary.json"):
        name = json.loads(summary.read_text())["algorithm"]
        runs[ALIASES.get(name, name)] = summary.parent
    return done.returncode, message, runs


def train_group(tree: Path, out: Path, group: tuple, names: dict[str, str], omniglot: Path) -> dict[str, dict]:
    """{algorithm: outcome} of one group at one commit. All its algorithms train in one process (a
    process costs seconds to start); if it stops, each trains alone, unless the refusal names none of
    them (an unknown field, say), which refuses them all."""
    wanted = group[2]
    code, message, runs = invoke(tree, out, group, [names[name] for name in wanted], omniglot)
    if code == 0 and set(wanted) <= runs.keys():
        return {name: {"status": "ok", "dir": runs[name]} for name in wanted}
    named = any(re.search(rf"(?<![\w+]){re.escape(names[name])}(?![\w+])", message) for name in wanted)
    if len(wanted) == 1 or (code == 2 and not named):
        status = "refused" if code == 2 else "failed"
        return {name: {"status": status, "message": f"exit {code}: {message}"} for name in wanted}
    outcomes = {}
    for name in wanted:
        alone = (*group[:2], [name], *group[3:])
        outcomes.update(train_group(tree, out.with_name(f"{out.name}-{name}"), alone, names, omniglot))
    return outcomes


def train_commit(tree: Path, results: Path, chosen: list[tuple], names: dict[str, str], omniglot: Path) -> dict:
    """{(dataset, engine, algorithm): outcome} for every group at the commit exported at ``tree``."""
    outcomes = {}
    for group in chosen:
        dataset, engine = group[:2]
        began = time.time()
        found = train_group(tree, results / f"{dataset}-{engine.replace(' ', '_')}", group, names, omniglot)
        outcomes.update({(dataset, engine, name): outcome for name, outcome in found.items()})
        states = ", ".join(f"{name} {outcome['status']}" for name, outcome in found.items())
        print(f"  {tree.name} {dataset}/{engine} ({time.time() - began:.0f} s): {states}", file=sys.stderr)
    return outcomes


def tensors(value, prefix: str = ""):
    """Every tensor of a saved ``model.pt`` (weights, outer optimiser state), by its dotted path."""
    if torch.is_tensor(value):
        yield prefix, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from tensors(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from tensors(item, f"{prefix}[{index}]")


def weight_diff(old: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> tuple[float, str]:
    """The largest |old - new| over every entry of every tensor (NaN at both: equal), and a note naming
    the tensors that differ most or that only one side has or that changed shape (then inf)."""
    notes, by_tensor = [] if old or new else ["no tensors at either"], {}
    for key in sorted(old.keys() ^ new.keys()):
        notes.append(f"{key} only at {'old' if key in old else 'new'}")
    for key in sorted(old.keys() & new.keys()):
        a, b = old[key].detach().double(), new[key].detach().double()
        if a.shape != b.shape:
            notes.append(f"{key} shape {tuple(a.shape)} -> {tuple(b.shape)}")
            continue
        same = (a == b) | (a.isnan() & b.isnan())  # inf at both is equal too
        delta = torch.where(same, 0.0, (a - b).abs()).nan_to_num(nan=math.inf)
        by_tensor[key] = float(delta.max()) if delta.numel() else 0.0
    worst = math.inf if notes else max(by_tensor.values(), default=0.0)
    largest = sorted(by_tensor.items(), key=lambda item: -item[1])[:3]
    notes += [f"{key} {delta:.3g}" for key, delta in largest if delta > TOLERANCE]
    return worst, "; ".join(notes)


def gap(old: float | None, new: float | None) -> float:
    """|old - new| of two scores; equal when both are missing or NaN (a sine run has no accuracy)."""
    if old is None or new is None:
        return 0.0 if old is new else math.inf
    if math.isnan(old) or math.isnan(new):
        return 0.0 if math.isnan(old) and math.isnan(new) else math.inf
    return abs(old - new)


def score_gap(old: dict, new: dict) -> float:
    """The largest gap between two summaries' test loss and test accuracy."""
    return max(gap(old.get(key), new.get(key)) for key in ("test_loss_mean", "test_accuracy_mean"))


def compare(case: tuple, old: dict, new: dict) -> dict:
    """One table row: the two commits' outcomes of ``case`` and whether they agree."""
    dataset, engine, algorithm = case
    row = {"case": "/".join(case), "algorithm": algorithm, "engine": f"{engine} ({dataset})", "old_score": "",
           "new_score": "", "score_diff": "", "max_weight_diff": "", "note": ""}
    score = "test_loss_mean" if dataset == "sine" else "test_accuracy_mean"
    for side, outcome in (("old", old), ("new", new)):
        if outcome["status"] == "ok":
            outcome["summary"] = json.loads((outcome["dir"] / "summary.json").read_text())
            row[f"{side}_score"] = outcome["summary"][score]
    states = (old["status"], new["status"])
    if states == ("ok", "ok"):
        weights = [dict(tensors(torch.load(o["dir"] / "model.pt", weights_only=True))) for o in (old, new)]
        row["max_weight_diff"], row["note"] = weight_diff(*weights)
        row["score_diff"] = score_gap(old["summary"], new["summary"])
        agree = row["max_weight_diff"] <= TOLERANCE and row["score_diff"] <= TOLERANCE
        return {**row, "verdict": "agree" if agree else "DIFFER"}
    verdicts = {("refused", "ok"): "new only", ("ok", "refused"): "old only", ("refused", "refused"): "refused at both"}
    messages = {side: o["message"].replace("metacompare: error: ", "")[:120]
                for side, o in (("old", old), ("new", new)) if "message" in o}
    same = len(messages) == 2 and len(set(messages.values())) == 1
    row["note"] = f"both: {messages['old']}" if same else " / ".join(f"{k}: {v}" for k, v in messages.items())
    return {**row, "verdict": verdicts.get(states, "FAILED")}


FAILING = ("DIFFER", "old only", "FAILED")


def write(rows: list[dict], out: Path, commits: list[str], command: str, seconds: float) -> Path:
    """``<old>_<new>.csv`` (every row, full precision) and ``<old>_<new>.md`` (the table, with the
    commits, the command and the verdict) under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{commits[0][:7]}_{commits[1][:7]}"
    with open(stem.with_suffix(".csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*rows[0], "old_commit", "new_commit"] if rows else ["case"])
        writer.writeheader()
        writer.writerows({**row, "old_commit": commits[0], "new_commit": commits[1]} for row in rows)
    lines = [f"# Commits agree? {commits[0][:7]} (old) against {commits[1][:7]} (new)", "",
             f"- old: `{commits[0]}`", f"- new: `{commits[1]}`", f"- command: `{command}`",
             f"- torch {torch.__version__}, one thread per run; {seconds / 60:.1f} minutes for both commits",
             f"- scores: test MSE (sine), test accuracy (Omniglot); tolerance {TOLERANCE:g}", "",
             f"**{verdict_line(rows)}**", "",
             "| case | old score | new score | score diff | max weight diff | verdict | note |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        numbers = [f"{row[key]:.6g}" if isinstance(row[key], float) else str(row[key])
                   for key in ("old_score", "new_score", "score_diff", "max_weight_diff")]
        cells = [row["case"], *numbers, row["verdict"], row["note"].replace("|", "/")]
        lines.append(f"| {' | '.join(cells)} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return stem


def verdict_line(rows: list[dict]) -> str:
    """One line: how many cases agree, and which do not."""
    tally = ", ".join(f"{n} {verdict}" for verdict, n in collections.Counter(row["verdict"] for row in rows).items())
    bad = [row["case"] for row in rows if row["verdict"] in FAILING]
    return f"disagree: {tally} ({', '.join(bad)})" if bad else f"agree: {tally}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("commits", nargs=2, metavar="COMMIT", help="the old commit, then the new one")
    parser.add_argument("--out", type=Path, default=REPO / "results/commits_agree")
    parser.add_argument("--only", default="", help="comma-separated algorithms (default: all registered)")
    parser.add_argument("--engines", default="", help="comma-separated engines or dataset/engine (default: all)")
    parser.add_argument("--omniglot", type=Path, default=REPO.parent / "shared/data/omniglot",
                        help="the folder of Omniglot's zips (default: ../shared/data/omniglot)")
    parser.add_argument("--jobs", type=int, choices=(1, 2), default=2,
                        help="train the two commits side by side (2, default) or one after the other (1)")
    args = parser.parse_args(argv)
    commits = [resolve(commit) for commit in args.commits]
    only = {ALIASES.get(name, name) for name in args.only.split(",") if name}
    rows, began = selected({e for e in args.engines.split(",") if e}, args.omniglot), time.time()
    # each commit's runs are processes of their own, so the two commits may train side by side
    with tempfile.TemporaryDirectory(prefix="commits_agree-") as scratch, ThreadPoolExecutor(args.jobs) as pool:
        trees = [export(commit, Path(scratch) / f"{side}-{commit[:7]}")
                 for side, commit in zip(("old", "new"), commits)]
        listed = only if not any(row[2] == "backend" for row in rows) else set()
        plugins = list(pool.map(registered, trees, [listed] * 2))
        union = {name: set().union(*(p[name][1] for p in plugins if name in p)) for p in plugins for name in p}
        chosen = groups(rows, union, only)
        outcomes = list(pool.map(lambda tree, p: train_commit(
            tree, Path(scratch) / f"results-{tree.name}", chosen, {name: p.get(name, (name,))[0] for name in union},
            args.omniglot), trees, plugins))
        table = [compare(case, outcomes[0][case], outcomes[1][case]) for case in outcomes[0]]
    command = " ".join(["python experiments/commits_agree.py", *(argv if argv is not None else sys.argv[1:])])
    stem = write(table, args.out, commits, command, time.time() - began)
    print(f"commits_agree {commits[0][:7]} -> {commits[1][:7]}: {verdict_line(table)} ({stem}.md)")
    return 1 if any(row["verdict"] in FAILING for row in table) else 0


if __name__ == "__main__":
    sys.exit(main())
