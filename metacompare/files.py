"""Every file metacompare reads back, read in one place with one error path.

A config, a sweep file, ``runs.csv``, a run's ``summary.json``, ``metrics.csv`` and ``config.yaml``,
``checkpoint.pt`` / ``model.pt`` and Lake's ``class_labels.txt`` may each be missing, a folder, empty,
truncated, not UTF-8, of the wrong YAML/JSON type, with duplicate or non-text keys, or with rows that
do not match their header. Each reader turns every such case into one :class:`FileProblem` that names
the file, what is wrong and the fix (the CLI prints it on one line, exit status 2). The readers know
file formats, not metacompare's schema: callers say which keys or columns they need.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import warnings
from pathlib import Path
from typing import Any, Iterable, NoReturn

import yaml

from metacompare import paths
from metacompare.errors import UserError


class FileProblem(UserError):
    """A file that cannot be read as what it should be; the message names it and the fix."""


def fail(path: Path | str, problem: str, fix: str) -> NoReturn:
    raise FileProblem(f"{path}: {problem}; {fix}")


def read_text(path: Path | str, fix: str) -> str:
    """The file's text: it must exist, be a regular file and be UTF-8 without NUL bytes."""
    path = Path(path)
    if path.is_dir():
        fail(path, "is a folder, not a file", fix)
    try:
        data = paths.read_bytes(path)  # a FIFO or device is refused, never waited on
    except FileNotFoundError:
        fail(path, paths.dangling(path) or "does not exist", fix)
    except OSError as err:
        fail(path, f"cannot be read ({err.strerror or err})", fix)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        fail(path, f"is not UTF-8 text (bad byte at offset {err.start})", fix)
    if "\x00" in text:
        fail(path, "holds NUL bytes, so it is binary or damaged", fix)
    return text


# ----------------------------------------------------------------------------------------- YAML
class StrictLoader(yaml.SafeLoader):
    """``safe_load`` that refuses a key written twice (PyYAML would keep the last silently) and keys
    that are not text (``1: x`` or ``[a]: x`` name no field)."""


def _strict_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, str):
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is not a name; write field names as text", key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"field '{key}' is set twice, keep one",
                                                    key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _strict_mapping)


def parse_yaml(text: str, path: Path | str, fix: str) -> Any:
    """``text`` parsed with :class:`StrictLoader`; a syntax error names its line and column."""
    try:
        return yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        fail(path, f"YAML syntax error{where}: {problem}", fix)


def read_yaml(path: Path | str, fix: str, empty: str = "is empty") -> dict[str, Any]:
    """A YAML file whose top level is a mapping of text keys; ``empty`` is the complaint for no content."""
    raw = parse_yaml(read_text(path, fix), path, fix)
    if raw is None:
        fail(path, empty, fix)
    if not isinstance(raw, dict):
        fail(path, f"expected a mapping of fields at the top level, got a {type(raw).__name__}", fix)
    return raw


# ----------------------------------------------------------------------------------------- JSON
def read_json(path: Path | str, fix: str, required: dict[str, type | tuple[type, ...]] | None = None) -> dict:
    """A JSON object; ``required`` maps keys that must be present to their accepted types."""
    text = read_text(path, fix)
    if not text.strip():
        fail(path, "is empty", fix)
    try:
        raw = json.loads(text, object_pairs_hook=lambda pairs: _unique_pairs(pairs, path, fix))
    except json.JSONDecodeError as err:
        fail(path, f"is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}; truncated?)", fix)
    if not isinstance(raw, dict):
        fail(path, f"expected a JSON object, got a {type(raw).__name__}", fix)
    for key, kinds in (required or {}).items():
        if key not in raw:
            fail(path, f"lacks the key '{key}'", fix)
        if not isinstance(raw[key], kinds) or isinstance(raw[key], bool) and bool not in _tuple(kinds):
            fail(path, f"'{key}' should be {_names(kinds)}, got {raw[key]!r}", fix)
    return raw


def _unique_pairs(pairs: list[tuple[str, Any]], path: Path | str, fix: str) -> dict:
    keys = [k for k, _ in pairs]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        fail(path, f"the key '{twice[0]}' appears twice", fix)
    return dict(pairs)


def _tuple(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def _names(kinds: type | tuple[type, ...]) -> str:
    return " or ".join("null" if k is type(None) else k.__name__ for k in _tuple(kinds))


# ------------------------------------------------------------------------------------------ CSV
def read_csv(path: Path | str, fix: str, required: Iterable[str] = (), known: Iterable[str] | None = None,
             numeric: Iterable[str] = (), missing_ok: bool = False) -> list[dict[str, str]]:
    """Rows of a CSV file with a header, every row as long as the header.

    ``required`` columns must be in the header; with ``known``, no other column may be; values of
    ``numeric`` columns must be numbers (``nan``, ``inf``) or empty. ``missing_ok``: a missing file is
    an empty table (a results table before its first row).
    """
    path = Path(path)
    if missing_ok and not path.exists():
        return []
    return _checked_rows(path, read_text(path, fix), fix, required, known, numeric)


def read_frame(path: Path | str, fix: str, required: Iterable[str] = (), rows: int | None = None,
               blank_ok: bool = False, numeric: Iterable[str] | None = None) -> "pandas.DataFrame":
    """A per-run table (``metrics.csv``, ``episodes.csv``) as a DataFrame, checked as :func:`read_csv`
    checks: a row cut short, a missing column or a word among numbers is a FileProblem, never a table
    quietly shorter than the run wrote; every value must be a number (or empty, ``nan``). ``rows``: the
    number of data rows it must hold (a file cut at a line end is only found so). ``blank_ok``: a file
    of no columns at all (a table written before its first row) is an empty DataFrame. ``numeric``:
    the columns that must hold numbers, for a table of words and numbers (``algorithms.csv``)."""
    import pandas

    path = Path(path)
    text = read_text(path, fix)
    if blank_ok and not text.strip():
        return pandas.DataFrame()
    body = _checked_rows(path, text, fix, required, None, ALL_COLUMNS if numeric is None else numeric)
    if rows is not None and len(body) != rows:
        fail(path, f"holds {len(body)} rows where the run wrote {rows} (truncated or edited)", fix)
    return pandas.read_csv(io.StringIO(text))


ALL_COLUMNS = ("*",)  # read_frame: every column is numeric


def _checked_rows(path: Path, text: str, fix: str, required: Iterable[str], known: Iterable[str] | None,
                  numeric: Iterable[str]) -> list[dict[str, str]]:
    if not text.strip():
        fail(path, "is empty (not even a header line)", fix)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
        body = [(reader.line_num, row) for row in reader]
    except csv.Error as err:
        fail(path, f"line {reader.line_num}: not CSV ({err})", fix)
    _check_header(path, header, required, known, fix)
    rows = []
    for line, row in body:
        if not row:
            continue
        if len(row) != len(header):
            fail(path, f"line {line} has {len(row)} values but the header has {len(header)} columns "
                       f"(a truncated or hand-edited file)", fix)
        rows.append(dict(zip(header, row)))
    for column in set(header) if tuple(numeric) == ALL_COLUMNS else set(numeric) & set(header):
        for line, row in enumerate(rows, 2):
            if row[column] != "" and not _is_number(row[column]):
                fail(path, f"column '{column}' holds {row[column]!r}, not a number (row {line - 1})", fix)
    return rows


def _check_header(path: Path, header: list[str], required: Iterable[str], known: Iterable[str] | None,
                  fix: str) -> None:
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        fail(path, f"the column '{twice[0]}' appears twice in the header", fix)
    missing = [c for c in required if c not in header]
    if missing:
        fail(path, f"lacks the column(s) {', '.join(missing)}", fix)
    if known is not None:
        extra = [c for c in header if c not in set(known)]
        if extra:
            fail(path, f"has unknown column(s) {', '.join(extra)}", fix)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def number(value: Any) -> float:
    """A CSV or JSON value as a float: empty or missing is NaN."""
    if value is None or value == "":
        return math.nan
    return float(value)


# ---------------------------------------------------------------------------------------- torch
def load_torch(path: Path | str, fix: str, required: Iterable[str] = ()) -> dict[str, Any]:
    """A ``torch.save``'d dict loaded with ``weights_only=True``: no code from the file ever runs.

    Our checkpoints hold only tensors, numbers, text, lists, tuples and dicts (RNG states are stored
    as such, see :mod:`metacompare.training.checkpoint`), all within PyTorch's default allow-list.
    """
    import pickle

    import torch

    path = Path(path)
    if path.is_dir():
        fail(path, "is a folder, not a file", fix)
    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle protocol before refusing it
            warnings.simplefilter("ignore", UserWarning)
            with paths.open_regular(path) as handle:  # a FIFO or device is refused, never waited on
                state = torch.load(handle, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        fail(path, paths.dangling(path) or "does not exist", fix)
    except paths.SpecialFile as err:
        fail(path, err.strerror, fix)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found:
            fail(path, f"refused: it holds {found.group(1)}, which is not plain weights, and loading it "
                       f"could run code", fix)
        fail(path, "unreadable checkpoint or weights file (damaged, or not a torch.save file)", fix)
    except Exception as err:  # torch raises many types for a damaged zip or pickle
        fail(path, f"unreadable checkpoint or weights file ({type(err).__name__}: "
                   f"{str(err).splitlines()[0][:160] if str(err) else 'damaged'})", fix)
    if not isinstance(state, dict):
        fail(path, f"holds a {type(state).__name__}, not metacompare's dict of state", fix)
    missing = [k for k in required if k not in state]
    if missing:
        fail(path, f"lacks {', '.join(missing)}, so it was not written by metacompare", fix)
    return state
