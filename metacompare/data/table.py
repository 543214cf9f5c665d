"""Feature vectors from a CSV or Parquet table with a label column (``dataset: table``).

Every column but the label column is a feature and must be numeric and finite: a NaN or infinity is
refused with its row and column rather than imputed, because a silently filled value changes what
is being compared. A header that names a column twice is refused (pandas would rename the second
``label`` to ``label.1`` and train on it as a feature). Labels may be numbers or text; each distinct
value is a class. With ``standardize`` the features are shifted and scaled by the meta-training
classes' mean and standard deviation (only those, so nothing of the test classes leaks into training).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import torch

from metacompare import paths
from metacompare.data.labelled import Labelled
from metacompare.data.source import register
from metacompare.data.user import Source, UserSource, file_digest, members
from metacompare.errors import DataError
from metacompare.config.runconfig import RunConfig

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
UTF8_FIX = "re-save it as UTF-8 (e.g. iconv -f latin1 -t utf-8 IN > OUT)"
PYARROW_FIX = "reading Parquet needs pyarrow; pip install 'metacompare[parquet]' or save the table as CSV"


def _not_utf8(path: Path) -> str:
    """Where a file stops being UTF-8: its first undecodable line and byte (pandas reports the offset
    in its own read buffer, not in the file)."""
    with paths.open_regular(path) as handle:
        for number, line in enumerate(handle, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                return f"line {number}: not UTF-8 text (byte 0x{line[err.start]:02x})"
    return "not UTF-8 text"


def _opened(path: Path) -> BinaryIO:
    """The table's file, opened through :func:`metacompare.paths.open_regular` (a FIFO named like a
    table is refused, never waited on); a missing, special or unknown file is a DataError."""
    paths.require_present(path, "no such file", "give a CSV or Parquet table (or a folder of images)")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; for images use dataset: folder")
    if path.suffix.lower() not in CSV_SUFFIXES + PARQUET_SUFFIXES:
        raise DataError(f"{path}: unknown table format '{path.suffix.lower()}'; give a .csv, .tsv or .parquet file")
    return paths.open_data(path, "give a regular, readable CSV or Parquet file")


def _names(handle: BinaryIO, path: Path) -> list[str]:
    """The header's names as the file writes them: pandas renames a repeated ``label`` to ``label.1``
    (which would then be read as a feature), so the header is read as a row of text, or for Parquet
    from the schema."""
    if path.suffix.lower() in PARQUET_SUFFIXES:
        import pyarrow.parquet as pq

        return list(pq.read_schema(handle).names)
    row = pd.read_csv(handle, sep=_separator(path), header=None, nrows=1, dtype=str, keep_default_na=False,
                      encoding="utf-8")
    return [str(name) for name in row.iloc[0]]


def check_names(path: Path, names: list[str]) -> None:
    """Refuse a header that names a column twice, or two whose names differ only in surrounding spaces,
    case or Unicode form: a second label column would become a feature holding the answer."""
    first: dict[str, str] = {}
    for name in names:
        key = unicodedata.normalize("NFKC", name).strip().casefold()
        if key in first:
            which = (f"repeats the column name '{name}'" if first[key] == name else
                     f"has the columns '{first[key]}' and '{name}', which differ only in surrounding spaces, "
                     f"case or how their letters are encoded")
            raise DataError(f"{path}: the header {which} (columns: {', '.join(repr(n) for n in names[:12])}"
                            f"{', ...' if len(names) > 12 else ''}); rename or drop the repeat so that each "
                            f"column has its own name")
        first[key] = name


def _separator(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


def read_frame(path: str | Path, header_only: bool = False) -> pd.DataFrame:
    """The whole table (with ``header_only``: its columns and no rows); every way it can fail is a
    DataError naming the file (and line) and the fix, a repeated column name included."""
    path = Path(path)
    with _opened(path) as handle:
        try:
            names = _names(handle, path)
            check_names(path, names)
            if header_only:
                return pd.DataFrame(columns=names)
            handle.seek(0)
            if path.suffix.lower() in PARQUET_SUFFIXES:
                frame = pd.read_parquet(handle)
            else:
                frame = pd.read_csv(handle, sep=_separator(path), encoding="utf-8")
        except ImportError:
            raise DataError(f"{path}: {PYARROW_FIX}") from None
        except UnicodeDecodeError:
            raise DataError(f"{path}, {_not_utf8(path)}; {UTF8_FIX}") from None
        except pd.errors.EmptyDataError:
            raise DataError(f"{path}: is empty; give a table with a header row and one row per example") from None
        except (pd.errors.ParserError, ValueError, OSError) as err:
            raise DataError(f"{path}: not a readable table ({type(err).__name__}: {str(err).strip()[:120]}); "
                            f"fix the file") from None
    if frame.empty:
        raise DataError(f"{path}: has a header but no rows; add one row per example")
    return frame


def labels_of(frame: pd.DataFrame, column: str, path: Path, option: str = "label_column") -> tuple[list[str], list[int]]:
    """(class names sorted, each row's class) from ``column``; a missing column or an empty label is refused."""
    if column not in frame.columns:
        raise DataError(f"{path}: no column '{column}' (columns: {', '.join(map(str, frame.columns[:12]))}); "
                        f"set user_data.{option} (--{option.replace('_', '-')}) to the column that holds "
                        f"{'the labels' if option == 'label_column' else 'the texts'}")
    values = frame[column]
    missing = values.isna().to_numpy().nonzero()[0]
    if len(missing):
        raise DataError(f"{path}: row {missing[0] + 1} (line {missing[0] + 2}) has no {column}; fill it or drop the row")
    names = values.astype(str)
    classes = sorted(set(names))
    number = {name: i for i, name in enumerate(classes)}
    return classes, [number[n] for n in names]


def features_of(frame: pd.DataFrame, label_column: str, path: Path) -> np.ndarray:
    """The feature columns as float32 ``[rows, width]``, each checked numeric and finite."""
    columns = [c for c in frame.columns if c != label_column]
    if not columns:
        raise DataError(f"{path}: has only the label column '{label_column}'; add feature columns")
    for column in columns:
        if not pd.api.types.is_numeric_dtype(frame[column]) or pd.api.types.is_bool_dtype(frame[column]):
            bad = pd.to_numeric(frame[column], errors="coerce").isna() & frame[column].notna()
            row = int(bad.to_numpy().nonzero()[0][0]) if bad.any() else 0
            raise DataError(f"{path}: feature column '{column}' is not numeric (row {row + 1}: "
                            f"{frame[column].iloc[row]!r}); drop or encode it, or use dataset: text for a text column")
    values = frame[columns].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{path}: row {row + 1} (line {row + 2}), column '{columns[col]}' is {values[row, col]}; "
                        f"NaN and infinity are refused: fill or drop that row")
    if np.abs(values).max() > np.finfo(np.float32).max:
        raise DataError(f"{path}: values beyond float32's range; rescale the features")
    return values.astype(np.float32)


@dataclass
class TableSource:
    path: Path
    features: np.ndarray
    classes: list[str]
    labels: list[int]


def read_table(path: str | Path, label_column: str) -> TableSource:
    path = Path(path)
    frame = read_frame(path)
    classes, labels = labels_of(frame, label_column, path)
    return TableSource(path, features_of(frame, label_column, path), classes, labels)


def standardizer(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per column (a constant column keeps scale 1)."""
    mean = features.mean(axis=0, dtype=np.float64)
    std = features.std(axis=0, dtype=np.float64)
    std[~(std > 0) | ~np.isfinite(std)] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


class Vectors(Labelled):
    """Rows of a feature matrix (or token-id matrix) with labels 0..n-1 of one split."""

    def __init__(self, values: torch.Tensor, labels: list[int]):
        super().__init__(labels)
        self.values = values

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.values[index], self.labels[index]


def width_of(path: str | Path, label_column: str) -> int:
    """The feature width from the header alone (CSV: the first line; Parquet: the schema)."""
    columns = read_frame(path, header_only=True).columns
    return len([c for c in columns if c != label_column])


class Table(UserSource):
    """A CSV or Parquet table of feature vectors, one column naming each row's class."""

    name = "table"
    networks = ("metamodel",)
    images = False

    def read(self, cfg: RunConfig, path: Path) -> Source:
        rows = read_table(path, cfg.user_data.label_column)
        return Source("table", path, rows.classes, [""] * len(rows.classes), rows.labels, file_digest(path), rows)

    def input_shape(self, cfg: RunConfig, channels: int | None = None) -> tuple[int, ...]:
        return (width_of(cfg.user_data.root, cfg.user_data.label_column),)

    def prepare(self, cfg: RunConfig, source: Source, train: list[int]) -> tuple[np.ndarray, np.ndarray] | None:
        """The training classes' mean and scale per column, with ``user_data.standardize``."""
        if not cfg.user_data.standardize:
            return None
        return standardizer(source.payload.features[members(source.labels, train)[0]])

    def dataset(self, cfg: RunConfig, source: Source, chosen: list[int], prepared) -> Vectors:
        indices, labels = members(source.labels, chosen)
        values = source.payload.features[indices]
        if prepared is not None:
            values = (values - prepared[0]) / prepared[1]
        return Vectors(torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)), labels)

    def protocol_changes(self, algorithm: str) -> dict:
        """MAML's inner loop takes SGD steps of 0.1 on the mean loss: Finn's 0.4 on a summed loss is
        untested on vectors (and texts)."""
        return {"inner_lr": 0.1, "inner_loss": "mean"} if algorithm in ("fomaml", "maml") else {}

    def payload_lines(self, cfg: RunConfig, source: Source, verify: bool) -> list[str]:
        return [f"  vectors: {source.payload.features.shape[1]} features per row"
                + (" (standardised by the training classes)" if cfg.user_data.standardize else "")]


register(Table())
