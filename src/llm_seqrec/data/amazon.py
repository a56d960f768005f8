"""The Amazon review dumps as published (``amazon2018``: McAuley lab's 2018 release, ``amazon2023``:
Amazon Reviews'23): a reviews file and a metadata file of JSON lines, gzipped or not, streamed line by
line into the columns the CSV reader gives (``AMAZON_FORMATS`` says which field fills which column).
"""

from __future__ import annotations

import ast
import gzip
import json
import logging
import time
import zlib
from array import array
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from llm_seqrec.data.raw_table import RawTable
from llm_seqrec.data.ids import normalise_id
from llm_seqrec.data.validation import DataValidationError

logger = logging.getLogger(__name__)


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
