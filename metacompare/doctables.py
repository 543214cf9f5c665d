"""Tables of recorded results in README.md and docs/, rendered from the committed ``results/`` files.

A block in a Markdown file is a marker naming its source, the rendered table, and an end marker::

    <!-- table: results/sine/report/table.csv columns=algorithm,test_loss_mean±test_loss_ci95:.3f -->
    ...rendered Markdown, rewritten by ``python -m metacompare.doctables --write``...
    <!-- end -->

so a number in the documentation is never typed by hand: ``--check`` (and ``tests/test_docs.py``, and
the docs build) re-renders every block and reports each one whose text differs from its source file.
Paths are relative to the repository root; a path with ``*`` (``results/sine/*/summary.json``) reads
every matching run summary as one row, nested keys dotted. Options after the path (``key=value``, shell quoting):

- ``view``: ``compare`` (the default for ``compare/algorithms.csv``: one row per algorithm, the score
  with its interval, floor, iterations, training time), ``pairwise`` (the default for
  ``pairwise_*.csv``) or ``csv`` (any other table, with ``columns``);
- ``columns``: comma-separated ``name``, ``name±ci_name`` (mean and interval), each optionally with
  ``:spec`` (a Python format spec; a leading ``%`` multiplies by 100 and appends ``%``, a leading
  ``~`` multiplies by 100 alone: percentage points);
- ``spec`` (pairwise): the differences' format (default ``~.2f``: accuracy in points);
- ``headers``: ``|``-separated column titles; ``where``: ``column:value,...`` keeps matching rows;
  ``sort``: ``column,...`` orders them;
- ``pivot``: ``row_column,column_column``: a grid of the one value column (``diverged`` cells say so);
- ``answer=yes`` (compare): the report's answer paragraph first; ``title=yes``: its heading before
  that; ``figure=NAME`` (compare, csv): the figure of that name in the source's folder after the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from metacompare import files, results
from metacompare.errors import UserError

START = re.compile(r"^<!-- table: (?P<spec>.+?) -->\s*$")
END = "<!-- end -->"
# Where the documentation lives, relative to the repository root: README and every docs page.
DOC_FILES = ("README.md",)
DOC_DIR = "docs"

HEADERS = {  # column titles for the csv view when `headers` is not given
    "algorithm": "algorithm", "num_tasks": "distinct training tasks", "inner_lr": "inner lr",
    "outer_lr": "outer lr", "inner_steps": "inner steps", "shots": "K", "iterations": "iterations",
    "test_accuracy_mean_pct": "test accuracy %", "test_loss_mean": "test MSE", "floor_mean": "untrained floor",
    "common_mean": "common procedure", "seconds_per_iteration": "s / iteration", "peak_memory_mb": "peak MB",
    "implementation": "implementation", "seconds_median": "s / iteration", "tasks_per_s": "tasks/s",
    "speedup_vs_learn2learn": "speed-up vs learn2learn", "speedup_vs_seed": "speed-up vs seed loop",
    "seeds": "seeds", "ci_over": "interval over",
}


@dataclass(frozen=True)
class Block:
    """One marked table in a Markdown file: its marker line, source spec and the text between the markers."""

    path: Path
    line: int  # 1-based line of the start marker
    spec: str
    body: str
    length: int  # lines between the markers


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"PATH k=v ..."`` -> (PATH, {k: v}); a malformed option is a UserError naming it."""
    words = shlex.split(spec)
    if not words:
        raise UserError("a table marker names no results file: write <!-- table: results/... -->")
    options = {}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep:
            raise UserError(f"table marker {spec!r}: option {word!r} is not key=value")
        options[key] = value
    return words[0], options


def blocks(path: Path) -> list[Block]:
    """Every marked block of a Markdown file, in order; an unclosed marker is a UserError."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    found, i = [], 0
    while i < len(lines):
        match = START.match(lines[i].rstrip("\n"))
        if match:
            j = next((k for k in range(i + 1, len(lines)) if lines[k].strip() == END), None)
            if j is None:
                raise UserError(f"{path}:{i + 1}: table marker without a following {END}")
            found.append(Block(path, i + 1, match["spec"], "".join(lines[i + 1:j]), j - i - 1))
            i = j
        i += 1
    return found


# ---- formatting -------------------------------------------------------------------------------------


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def fmt(value, spec: str = "") -> str:
    """One cell: numbers by ``spec`` (``%`` first: times 100, with a percent sign), nan as n/a."""
    if isinstance(value, str) and _number(value) is None:
        return value
    number = _number(value)
    if number is None:
        return "n/a"
    if spec.startswith("%"):
        return f"{100 * number:{spec[1:] or '.2f'}}%"
    if spec.startswith("~"):  # percentage points
        return f"{100 * number:{spec[1:] or '.2f'}}"
    if spec.endswith("f") and abs(number) >= 1e5:  # a blown-up score: fixed point would be unreadable
        return f"{number:.2e}"
    if spec:
        return f"{number:{spec}}"
    if float(number).is_integer() and abs(number) < 1e15:
        return f"{int(number):,}"
    return f"{number:.4g}"


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def frame_table(frame: pd.DataFrame) -> str:
    """Any DataFrame as a markdown table, every cell by :func:`fmt` (the compare report's extra tables)."""
    return _markdown_table([str(c) for c in frame.columns], [[fmt(v) for v in row] for row in frame.itertuples(index=False)])


def _read(root: Path, source: str) -> pd.DataFrame:
    """A CSV file, or with a ``*`` in the path every matching JSON file (run summaries) as one row
    each, nested keys dotted (``test_by_inner_steps.1.loss_mean``), in path order."""
    if "*" in source:
        paths = sorted(root.glob(source))
        if not paths:
            raise UserError(f"table marker names {source}, which matches no file under {root}; fix the path")
        return pd.json_normalize([json.loads(p.read_text(encoding="utf-8")) for p in paths], sep=".")
    path = root / source
    if not path.is_file():
        raise UserError(f"table marker names {source}, which does not exist under {root}; fix the path")
    return files.read_frame(path, "write it again with the command that made it", numeric=())


def _link(root: Path, target: str, page: Path) -> str:
    """A link from ``page`` to the repository file ``target``: docs pages see the repository root as
    the docs folder (the docs build mounts results/ there), README.md sees it as itself."""
    page = page.resolve()
    docs = (root / DOC_DIR).resolve()
    base = docs if docs in page.parents else root.resolve()
    return Path(os.path.relpath(base / target, page.parent)).as_posix()


# ---- views ------------------------------------------------------------------------------------------


def _runs(root: Path, source: str) -> pd.DataFrame | None:
    """The experiment's runs.csv beside a compare/ folder (for the metric and one-seed intervals)."""
    path = (root / source).parent.parent / "runs.csv"
    return results.read_runs_frame(path.parent) if path.is_file() else None


def view_compare(root: Path, source: str, options: dict[str, str], page: Path) -> str:
    """A compare's answer: algorithms.csv, best first, the interval across seeds (or, with one seed,
    over the test episodes from runs.csv), the untrained floor, iterations and training time."""
    table = _read(root, source)
    runs = _runs(root, source)
    regression = runs is not None and (runs["dataset"] == "sine").all()
    table = table.sort_values("score", ascending=regression, kind="stable")
    spec = ".3f" if regression else "%.2f"
    cpu = table["train_cpu_seconds"].notna().all() and "cpu" in source
    header = ["algorithm", "test MSE (95% CI)" if regression else "test accuracy (95% CI)", "interval over",
              "untrained floor", "iterations", "training CPU-s" if cpu else "training s"]
    tuned = (table["setting"] != "as configured").any()
    if tuned:
        header.append("setting")
    rows = []
    for position, row in enumerate(table.to_dict("records")):
        ci, over = row["score_ci95"], f"{int(row['finished'])} of {int(row['seeds'])} seeds"
        if int(row["finished"]) == 1 and runs is not None:
            done = runs[(runs["algorithm"] == row["algorithm"]) & (runs["status"] == "finished")]
            if len(done) == 1:
                metric = "test_loss" if regression else "test_accuracy"
                ci = done.iloc[0][f"{metric}_ci95"]
                over = f"{int(done.iloc[0]['test_episodes']):,} episodes, 1 seed"
        score = fmt(row["score"], spec) + ("" if _number(ci) is None else f" ± {fmt(ci, spec).rstrip('%')}")
        name = row["algorithm"]
        if position == 0:
            name, score = f"**{name}**", f"**{score}**"
        cells = [name, score, over, fmt(row["floor"], spec), fmt(row["iterations_done"], ",.0f"),
                 fmt(row["train_cpu_seconds"] if cpu else row["train_seconds"], ",.0f")]
        rows.append(cells + ([row["setting"]] if tuned else []))
    parts = []
    if options.get("answer") == "yes":
        report = (root / source).parent / "report.md"
        if not report.is_file():
            raise UserError(f"table marker {source}: answer=yes needs {report.relative_to(root)}, which is missing")
        answer = next((p for p in report.read_text(encoding="utf-8").split("\n\n") if p.startswith("**Answer")), None)
        if answer is None:
            raise UserError(f"{report.relative_to(root)} has no paragraph starting with **Answer")
        parts.append(answer.strip() + "\n")
    if options.get("title") == "yes":  # the report's own heading, e.g. the dataset, task and budget
        report = (root / source).parent / "report.md"
        heading = report.read_text(encoding="utf-8").splitlines()[0] if report.is_file() else ""
        if not heading.startswith("# "):
            raise UserError(f"table marker {source}: title=yes needs {report.relative_to(root)} to open "
                            f"with a heading")
        parts.insert(0, f"**{heading[2:].strip()}**\n")
    parts.append(_markdown_table(header, rows))
    return "\n".join(parts)


def view_pairwise(root: Path, source: str, options: dict[str, str], page: Path) -> str:
    """Paired differences (pairwise_episodes.csv / pairwise_seeds.csv / report/pairwise.csv)."""
    table = _read(root, source)
    spec = options.get("spec", "~.2f")
    rows = [[f"{r['a']} − {r['b']}", f"{r['over']} ({int(r['n']):,})",
             fmt(r["difference"], spec) + ("" if _number(r["difference_ci95"]) is None
                                           else f" ± {fmt(r['difference_ci95'], spec).rstrip('%')}"),
             fmt(r["t_p_holm"], ".2g"), fmt(r["wilcoxon_p_holm"], ".2g"), r["verdict"]]
            for r in table.to_dict("records")]
    mean = "mean, points (95% CI)" if spec.startswith("~") else "mean (95% CI)"
    header = ["difference", "paired over (n)", mean, "paired t, Holm p", "Wilcoxon, Holm p", "verdict"]
    return _markdown_table(header, rows)


def _columns(text: str) -> list[tuple[str, str | None, str]]:
    """``a,b±c:.2f`` -> [(a, None, ""), (b, c, ".2f")]."""
    out = []
    for item in filter(None, text.split(",")):
        name, _, spec = item.partition(":")
        mean, _, ci = name.partition("±")
        out.append((mean, ci or None, spec))
    return out


def _label(column: str, value) -> str:
    """A row or column label of a pivot; ``num_tasks: -1`` is a new task at every draw."""
    return "unlimited" if column == "num_tasks" and _number(value) == -1 else fmt(value)


def _order(column: str, value) -> tuple:
    """Pivot columns in numeric order, ``num_tasks: -1`` (unlimited) last; text in its own order."""
    number = _number(value)
    if number is None:
        return (1, 0.0)
    return (0, math.inf if column == "num_tasks" and number == -1 else number)


def _cell(row: dict, mean: str, ci: str | None, spec: str) -> str:
    value = row[mean]
    if mean == "num_tasks":
        return _label(mean, value)
    if _number(value) is None and not isinstance(value, str) and row.get("diverged", 0):
        return "diverged"
    text = fmt(value, spec)
    if ci is not None and _number(row[ci]) is not None:
        text += f" ± {fmt(row[ci], spec).rstrip('%')}"
    return text


def view_csv(root: Path, source: str, options: dict[str, str], page: Path) -> str:
    """Chosen columns of any results table, optionally filtered (``where``) or pivoted (``pivot``)."""
    table = _read(root, source)
    if "columns" not in options:
        raise UserError(f"table marker {source}: the csv view needs columns=... (e.g. columns=algorithm)")
    columns = _columns(options["columns"])
    for key, value in (w.split(":", 1) for w in filter(None, options.get("where", "").split(","))):
        if key not in table:
            raise UserError(f"table marker {source}: where names {key!r}, not a column of the file")
        table = table[table[key].astype(str) == value]
    missing = sorted({c for m, ci, _ in columns for c in (m, ci) if c} - set(table.columns))
    if missing:
        raise UserError(f"table marker {source}: no column {', '.join(missing)} in the file")
    if "sort" in options:
        table = table.sort_values(options["sort"].split(","), kind="stable")
    records = table.to_dict("records")
    if "pivot" in options:
        row_key, col_key = options["pivot"].split(",")
        (mean, ci, spec), = columns
        col_values = sorted(dict.fromkeys(table[col_key]), key=lambda v: _order(col_key, v))
        grid: dict = {}
        for r in records:
            grid.setdefault(r[row_key], {})[r[col_key]] = _cell(r, mean, ci, spec)
        header = [f"{row_key} \\ {col_key}"] + [_label(col_key, v) for v in col_values]
        if "headers" in options:
            header = options["headers"].split("|")
        rows = [[_label(row_key, k)] + [cells.get(v, "—") for v in col_values] for k, cells in grid.items()]
    else:
        header = (options["headers"].split("|") if "headers" in options
                  else [HEADERS.get(m, m) for m, _, _ in columns])
        rows = [[_cell(r, m, ci, spec) for m, ci, spec in columns] for r in records]
    if len(header) != len(rows[0] if rows else header):
        raise UserError(f"table marker {source}: headers has {len(header)} titles for "
                        f"{len(rows[0]) if rows else 0} columns")
    return _markdown_table(header, rows)


VIEWS = {"compare": view_compare, "pairwise": view_pairwise, "csv": view_csv}


def render(spec: str, root: Path, page: Path) -> str:
    """The Markdown a marker's spec stands for (the text between its markers), ending with its source."""
    source, options = parse_spec(spec)
    name = options.get("view") or ("compare" if source.endswith("compare/algorithms.csv")
                                   else "pairwise" if Path(source).name.startswith("pairwise") else "csv")
    if name not in VIEWS:
        raise UserError(f"table marker {source}: unknown view {name!r}; choose {', '.join(VIEWS)}")
    text = VIEWS[name](root, source, options, page)
    if "figure" in options:
        figure = str(Path(source).parent / options["figure"])
        if not (root / figure).is_file():
            raise UserError(f"table marker {source}: figure {figure} does not exist")
        text += f"\n![{Path(figure).stem.replace('_', ' ')}]({_link(root, figure, page)})\n"
    return text + f"\n<sub>Rendered from `{source}`.</sub>\n"


# ---- the files ----------------------------------------------------------------------------------------


def doc_files(root: Path) -> list[Path]:
    """README.md and every Markdown page under docs/."""
    files = [root / name for name in DOC_FILES if (root / name).is_file()]
    return files + sorted((root / DOC_DIR).rglob("*.md"))


def check(root: Path, files: list[Path] | None = None) -> list[str]:
    """One line per stale block: the file and line, its source, and the first line that differs."""
    problems = []
    for path in files if files is not None else doc_files(root):
        for block in blocks(path):
            want = render(block.spec, root, path)
            if block.body != want:
                have_lines, want_lines = block.body.splitlines(), want.splitlines()
                first = next((i for i, (a, b) in enumerate(zip(have_lines, want_lines)) if a != b),
                             min(len(have_lines), len(want_lines)))
                got = have_lines[first] if first < len(have_lines) else "(nothing)"
                expected = want_lines[first] if first < len(want_lines) else "(nothing)"
                problems.append(f"{path}:{block.line}: table from {parse_spec(block.spec)[0]} differs from the "
                                f"file: has {got!r}, the file gives {expected!r}; run python -m "
                                f"metacompare.doctables --write")
    return problems


def write(root: Path, files: list[Path] | None = None) -> list[Path]:
    """Re-render every block in place; returns the files that changed."""
    changed = []
    for path in files if files is not None else doc_files(root):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines(keepends=True)
        for block in reversed(blocks(path)):
            start = block.line  # index of the first body line
            end = start + block.length
            lines[start:end] = [render(block.spec, root, path)]
        new = "".join(lines)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metacompare.doctables", description=__doc__.split("\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="re-render every table block in place")
    action.add_argument("--check", action="store_true", help="exit 1 if a block differs from its results file")
    parser.add_argument("--root", default=".", help="the repository root (default: the current folder)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    try:
        if args.write:
            for path in write(root):
                print(f"doctables: rewrote {path}")
            return 0
        problems = check(root)
    except UserError as err:
        print(f"doctables: error: {err}", file=sys.stderr)
        return 2
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
