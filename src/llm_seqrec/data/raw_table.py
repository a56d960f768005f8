"""The raw table every reader returns: string cells that remember the file line each row starts on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


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
