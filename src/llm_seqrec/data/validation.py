"""Check the raw tables; repair what has one obvious repair, refuse the rest.

Every problem ends one of two ways (the full list, with the reasons: ``docs/data_validation.md``):

- ``DataValidationError`` when the file is not what it should be and any repair would be a guess
  (missing file or column, wrong delimiter, a timestamp that is not a non-negative number, ...).
  The message names the file, the column and an example row with its line number.
- a repair, when it loses no more than the offending row and has one obvious form (duplicates,
  rows without an id or a timestamp, HTML entities, overlong text, ...). ``QualityReport`` counts
  it with up to three example rows, and logs it; the report becomes the ``data_quality`` dataset.

Raw ids are strings. Surrounding whitespace is stripped, and a whole number written as a float
(``"1.0"``, ``"7.00"``) becomes the integer (``"1"``, ``"7"``): spreadsheets and pandas write
integer ids that way once a column has a gap, and the two files must agree on the id of an item.
Any other id (``"007"``, ``"1.5"``, ``"B00X"``) is kept exactly as written.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np
import pandas as pd

from llm_seqrec.data.ids import normalise_id_column
from llm_seqrec.data.raw_table import RawTable

logger = logging.getLogger(__name__)

INTERACTION_FIELDS = ("user_id", "item_id", "timestamp")
ITEM_FIELDS = ("item_id", "title")
TEXT_SEPARATOR = " | "
REPLACEMENT_CHAR = "\ufffd"
PLACEHOLDER_TITLE = "item "  # + item_id: the title of an item whose title is empty
MAX_EXAMPLES = 3
EXAMPLE_CHARS = 120


class DataValidationError(ValueError):
    """A raw file that cannot be used as it is; the message says where and why."""


class QualityReport:
    """What the raw data held, what was repaired, and what is left: the ``data_quality`` dataset."""

    def __init__(self) -> None:
        self.counts: dict[str, object] = {}
        self.repairs: dict[str, dict] = {}

    def record(
        self,
        name: str,
        path: Path,
        action: str,
        rows: pd.DataFrame,
        *,
        count: int | None = None,
        level: int = logging.WARNING,
        **details: int,
    ) -> None:
        """Record a repair (also when nothing needed it, so every check shows in the report)."""
        count = len(rows) if count is None else count
        examples = _example_rows(rows)
        self.repairs[name] = {"count": int(count), "file": str(path), "action": action, **details, "examples": examples}
        if count:
            logger.log(level, "%s: %s: %d, %s; e.g. %s", path, name, count, action, examples[0])

    def to_dict(self) -> dict:
        return {**self.counts, "repairs": self.repairs}


def validate_items(
    table: RawTable, report: QualityReport, *, text_fields: Sequence[str] | None, max_text_chars: int
) -> pd.DataFrame:
    """Items as ``item_id, title, text, line``: one row per item id, text cleaned and bounded.

    ``text`` is the title, then each of ``text_fields`` (None = every further column) that is not
    empty, as "field: value", joined by " | "; HTML entities unescaped, whitespace collapsed, cut to
    ``max_text_chars`` characters.
    """
    path = table.path
    _require_columns(table, ITEM_FIELDS)
    fields = _text_fields(table, text_fields)
    frame = table.frame[["line", *ITEM_FIELDS, *fields]]
    report.counts["raw_item_rows"] = len(frame)
    report.counts["item_rows_without_reviews_skipped"] = table.unreviewed_rows
    text_columns = ["title", *fields]
    _refuse_invalid_utf8(table, frame, ["item_id"])
    if table.invalid_utf8:
        replaced = frame[text_columns].apply(lambda column: column.str.contains(REPLACEMENT_CHAR, regex=False))
        action = "bytes that are not UTF-8 replaced by U+FFFD"
        report.record("item_text_invalid_utf8_replaced", path, action, frame[replaced.any(axis=1)])

    frame = _normalise_ids(frame, ["item_id"], report, "item_ids_normalised", path)
    frame = _drop_rows(frame, frame["item_id"] == "", report, "items_without_id_dropped", path, "dropped: no item_id")
    duplicate = frame.duplicated("item_id")
    frame = _drop_rows(
        frame, duplicate, report, "duplicate_items_dropped", path, "dropped: the first row of an item_id wins"
    )
    if frame.empty:
        raise DataValidationError(f"{path}, column 'item_id': no row has an item id")

    raw = frame[text_columns]
    unescaped = raw.apply(lambda column: column.map(html.unescape))
    had_entities = (unescaped != raw).any(axis=1)
    action = "HTML entities such as &amp; turned into characters"
    report.record("html_entities_unescaped", path, action, frame[had_entities])
    cleaned = unescaped.apply(lambda column: column.map(_collapse_whitespace))
    report.counts["empty_item_fields"] = {column: int((cleaned[column] == "").sum()) for column in text_columns}

    empty_title = cleaned["title"] == ""
    report.record(
        "empty_titles_filled", path, 'an empty or whitespace-only title became "item <item_id>"', frame[empty_title]
    )
    action = "no title and no text field: no llm_item_embeddings vector, sasrec_text has the ID embedding alone"
    report.record("items_without_text", path, action, frame[cleaned[text_columns].eq("").all(axis=1)], level=logging.INFO)
    title = cleaned["title"].where(~empty_title, PLACEHOLDER_TITLE + frame["item_id"])
    text = title
    for field in fields:
        value = cleaned[field]
        text = text + (TEXT_SEPARATOR + field + ": " + value).where(value != "", "")

    too_long = (text.str.len() > max_text_chars) | (title.str.len() > max_text_chars)
    report.record(
        "texts_truncated",
        path,
        f"title and text cut to data_processing.max_text_chars={max_text_chars} characters",
        frame[too_long],
    )
    return pd.DataFrame(
        {
            "item_id": frame["item_id"],
            "title": title.str.slice(0, max_text_chars).str.rstrip(),
            "text": text.str.slice(0, max_text_chars).str.rstrip(),
            "line": frame["line"],
        }
    ).reset_index(drop=True)


def items_without_text(item_catalog: pd.DataFrame) -> pd.Series:
    """True for the items of an ``item_catalog`` with neither a title nor a text field (title and text: the placeholder)."""
    placeholder = PLACEHOLDER_TITLE + item_catalog["item_id"].astype(str)
    return (item_catalog["title"] == placeholder) & (item_catalog["text"] == placeholder)


def validate_interactions(
    table: RawTable, report: QualityReport, *, item_ids: pd.Series, items_path: Path
) -> pd.DataFrame:
    """Interactions as ``user_id, item_id, timestamp (float64), line``, in input order.

    ``item_ids`` are the valid items (from ``validate_items``); interactions with any other item
    are dropped and counted.
    """
    path = table.path
    _require_columns(table, INTERACTION_FIELDS)
    frame = table.frame[["line", *INTERACTION_FIELDS]]
    report.counts["raw_interaction_rows"] = len(frame)
    _refuse_invalid_utf8(table, frame, list(INTERACTION_FIELDS))

    frame = _normalise_ids(frame, ["user_id", "item_id"], report, "interaction_ids_normalised", path)
    no_id = (frame["user_id"] == "") | (frame["item_id"] == "")
    frame = _drop_rows(
        frame, no_id, report, "interactions_without_id_dropped", path, "dropped: no user_id or no item_id"
    )
    no_time = frame["timestamp"].str.strip() == ""
    frame = _drop_rows(
        frame, no_time, report, "interactions_without_timestamp_dropped", path, "dropped: no timestamp to order it by"
    )

    time = pd.to_numeric(frame["timestamp"].str.strip(), errors="coerce").astype("float64")
    not_number = ~np.isfinite(time.to_numpy())
    if not_number.any():
        _fail(table, "timestamp", "not a number (expected Unix seconds or an ordinal position)", frame[not_number])
    negative = time.to_numpy() < 0
    if negative.any():
        _fail(
            table,
            "timestamp",
            "negative (timestamps only order a history; a negative value is usually a missing-value marker)",
            frame[negative],
        )

    unknown = ~frame["item_id"].isin(item_ids)
    if len(frame) and unknown.all():
        _fail(table, "item_id", f"no item id appears in {items_path} (compare the ids of the two files)", frame)
    frame = _drop_rows(
        frame, unknown, report, "interactions_with_unknown_item_dropped", path, f"dropped: item_id not in {items_path}"
    )
    duplicate = frame.assign(time=time).duplicated(["user_id", "item_id", "time"])
    frame = _drop_rows(
        frame,
        duplicate,
        report,
        "duplicate_interactions_dropped",
        path,
        "dropped: same user_id, item_id and timestamp as an earlier row",
    )
    if frame.empty:
        dropped = {
            name: entry["count"]
            for name, entry in report.repairs.items()
            if entry["count"] and entry["file"] == str(path)
        }
        raise DataValidationError(f"{path}: no usable interaction is left after the repairs {dropped}")
    return pd.DataFrame(
        {
            "user_id": frame["user_id"],
            "item_id": frame["item_id"],
            "timestamp": time[frame.index] / table.timestamps_per_second,
            "line": frame["line"],
        }
    ).reset_index(drop=True)


def _example_rows(rows: pd.DataFrame) -> list[dict]:
    """The first rows as JSON-ready dicts, ``line`` first and long values shortened."""
    examples = []
    for record in rows.head(MAX_EXAMPLES).to_dict(orient="records"):
        line = int(record.pop("line"))
        examples.append({"line": line, **{str(k): _shorten(v) for k, v in record.items()}})
    return examples


def _fail(table: RawTable, column: str, problem: str, rows: pd.DataFrame) -> NoReturn:
    """Raise a ``DataValidationError`` naming the file, the column (a JSON dump's field) and the first offending row."""
    example = _example_rows(rows.head(1))[0]
    line = example.pop("line")
    raise DataValidationError(
        f"{table.path}, {table.describe(column)}: {problem} ({len(rows)} rows), e.g. line {line}: {example}"
    )


def _require_columns(table: RawTable, columns: Sequence[str]) -> None:
    found = [c for c in table.frame.columns if c != "line"]
    missing = [c for c in columns if c not in found]
    if missing:
        raise DataValidationError(
            f"{table.path}, column {missing[0]!r}: missing (line 1 has the columns {found}; "
            f"expected at least {list(columns)})"
        )


def _normalise_ids(
    frame: pd.DataFrame, columns: Sequence[str], report: QualityReport, name: str, path: Path
) -> pd.DataFrame:
    """Strip whitespace from ids and write whole floats as integers ("1.0" -> "1"); count the changes."""
    normalised = {c: normalise_id_column(frame[c]) for c in columns}
    changed = np.zeros(len(frame), dtype=bool)
    for column, values in normalised.items():
        changed |= (values != frame[column]).to_numpy()
    report.record(name, path, 'whitespace stripped, whole floats written as integers ("1.0" -> "1")', frame[changed])
    return frame.assign(**normalised)


def _drop_rows(
    frame: pd.DataFrame, mask: pd.Series | np.ndarray, report: QualityReport, name: str, path: Path, action: str
) -> pd.DataFrame:
    """``frame`` without the rows of ``mask``, recorded in ``report`` as the repair ``name``."""
    mask = np.asarray(mask, dtype=bool)
    report.record(name, path, action, frame[mask])
    return frame[~mask]


def _text_fields(table: RawTable, text_fields: Sequence[str] | None) -> list[str]:
    found = [c for c in table.frame.columns if c not in ("line", *ITEM_FIELDS)]
    if text_fields is None:
        return found
    unknown = [f for f in text_fields if f not in found and f not in ITEM_FIELDS]
    if unknown:
        raise DataValidationError(
            f"{table.path}, column {unknown[0]!r}: named in dataset.text_fields but not in the file "
            f"(its text columns are {found})"
        )
    return [f for f in text_fields if f not in ITEM_FIELDS]


def _refuse_invalid_utf8(table: RawTable, frame: pd.DataFrame, columns: Sequence[str]) -> None:
    """Undecodable bytes in an id would merge distinct ids into one; refuse them."""
    if not table.invalid_utf8:
        return
    for column in columns:
        bad = frame[column].str.contains(REPLACEMENT_CHAR, regex=False).to_numpy()
        if bad.any():
            _fail(table, column, "holds bytes that are not UTF-8 (re-save the file as UTF-8)", frame[bad])


def _collapse_whitespace(value: str) -> str:
    return " ".join(value.split())


def _shorten(value: object) -> object:
    if isinstance(value, str) and len(value) > EXAMPLE_CHARS:
        return value[:EXAMPLE_CHARS] + f"... ({len(value)} characters)"
    if isinstance(value, np.generic):
        return value.item()
    return value
