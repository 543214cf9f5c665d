"""Tables of recorded results in README.md and docs/, rendered from the committed ``results/`` files.

A block in a Markdown file is a marker naming its source, the rendered table, and an end marker::

    <!-- table: results/sine/report/table.csv columns=algorithm,test_loss_mean±test_loss_ci95:.3f -->
    ...rendered Markdown, rewritten by ``python -m doctools.doctables --write``...
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
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from metacompare.errors import UserError
from metacompare.report.tables import DOC_DIR, fmt, frame_table, parse_spec, render  # noqa: F401 (the tables API)

START = re.compile(r"^<!-- table: (?P<spec>.+?) -->\s*$")
END = "<!-- end -->"
# The documentation's Markdown files besides docs/, relative to the repository root.
DOC_FILES = ("README.md",)


@dataclass(frozen=True)
class Block:
    """One marked table in a Markdown file: its marker line, source spec and the text between the markers."""

    path: Path
    line: int  # 1-based line of the start marker
    spec: str
    body: str
    length: int  # lines between the markers



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
                                f"doctools.doctables --write")
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
    parser = argparse.ArgumentParser(prog="python -m doctools.doctables", description=__doc__.split("\n")[0])
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
