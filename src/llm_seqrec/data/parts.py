"""A folder of parquet parts keyed by content: the store under the summary, item-embedding and score caches.

Each ``write`` puts one new part under a temporary name and renames it into place (``files.atomic_write``),
so an interrupted run keeps every part it finished and a reader never meets half a part. Parts are never
rewritten; if two runs raced to write the same key, reading keeps its first row (part names sort by
time), so a cache only ever grows and deleting the folder is the one way to clear it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from llm_seqrec.data.files import atomic_write


class PartsStore:
    """The parts of ``folder``, all of ``schema``, one row per value of the ``key`` column."""

    def __init__(self, folder: str | Path, schema: pa.Schema, key: str = "key") -> None:
        self.folder = Path(folder)
        self.schema = schema
        self.key = key

    def parts(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.parquet"))

    def read(self, filters: Sequence[tuple] | None = None) -> pd.DataFrame:
        """Every stored row (those matching pyarrow ``filters`` where given), the first per key."""
        tables = [pq.read_table(p, schema=self.schema, filters=list(filters) if filters else None) for p in self.parts()]
        table = pa.concat_tables(tables) if tables else self.schema.empty_table()
        return table.to_pandas().drop_duplicates(self.key, keep="first").reset_index(drop=True)

    def write(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` (the schema's columns) as one new part; returns it as it reads back."""
        table = pa.Table.from_pandas(frame[self.schema.names], schema=self.schema, preserve_index=False)
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"part-{time.time_ns():020d}-{os.getpid()}.parquet"
        atomic_write(self.folder / name, lambda tmp: pq.write_table(table, tmp))
        return table.to_pandas()


class KeyedParts:
    """A handle on a parts folder read whole (the summary and item-embedding caches; each subclass sets
    ``schema``): its rows, and appending the rows whose keys are new."""

    schema: pa.Schema

    def __init__(self, folder: str | Path) -> None:
        self.store = PartsStore(folder, self.schema)
        self.folder = self.store.folder
        self._frame = self.store.read()

    def __len__(self) -> int:
        return len(self._frame)

    @property
    def keys(self) -> set[str]:
        return set(self._frame["key"])

    def append(self, frame: pd.DataFrame) -> None:
        """Persist the rows of ``frame`` whose keys are new, as one part written atomically."""
        new = frame[~frame["key"].isin(self.keys)].drop_duplicates("key")
        if not new.empty:
            self._frame = pd.concat([self._frame, self.store.write(new)], ignore_index=True)

    def to_frame(self) -> pd.DataFrame:
        return self._frame.copy()
