"""Markdown tables rendered from result files: the compare report's tables and the documentation's.

A table is named by a spec, ``"PATH key=value ..."``: the results file (a CSV, or a glob of run summaries read
as one row each) and how to show it (``view``: ``compare``, ``pairwise`` or ``csv``; ``columns``, ``headers``,
``where``, ``sort``, ``pivot``, ``answer``, ``title``, ``figure``). The documentation's markers
(``doctools/doctables.py``) and ``metacompare compare``'s report both render through :func:`render`, so a
number is formatted the same way wherever it is shown.
"""

from __future__ import annotations

import json
import math
import os
import shlex
from pathlib import Path

import pandas as pd

from metacompare import files

from metacompare.storage import results
from metacompare.errors import UserError
from metacompare.data.source import classifies

# Where the documentation lives, relative to the repository root (links from docs pages start there).
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
    regression = runs is not None and not any(classifies(d) for d in set(runs["dataset"].astype(str)))
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
