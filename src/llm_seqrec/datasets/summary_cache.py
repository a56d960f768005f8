"""The summary cache: a folder of parquet parts, one row per summary (``llm.summarize.CACHE_COLUMNS``).

Each ``append`` writes one new part under a temporary name and renames it into place, so a run that is
interrupted keeps every part it finished and readers never see half a part. Parts are never rewritten:
a key already present is not appended again, and if two runs raced to write the same key, loading
keeps its first row.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from kedro.io.core import AbstractDataset
from kedro_datasets._typing import TablePreview

from llm_seqrec.data.files import atomic_write
from llm_seqrec.llm.summarize import CACHE_COLUMNS

_TYPES = {
    "key": pa.string(), "user_idx": pa.int64(), "cutoff": pa.string(), "method": pa.string(),
    "level_or_step": pa.int64(), "input_keys": pa.list_(pa.string()), "item_ids": pa.list_(pa.int64()),
    "prompt_version": pa.string(), "model": pa.string(), "summary": pa.string(),
    "tokens_in": pa.int64(), "tokens_out": pa.int64(), "seconds": pa.float64(),
}
SCHEMA = pa.schema([(name, _TYPES[name]) for name in CACHE_COLUMNS])


class SummaryCache:
    """A handle on the cache folder: which keys it holds, their summaries, and appending new rows."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        parts = sorted(self.folder.glob("part-*.parquet"))
        table = pa.concat_tables([pq.read_table(p, schema=SCHEMA) for p in parts]) if parts else SCHEMA.empty_table()
        self._frame = table.to_pandas().drop_duplicates("key", keep="first").reset_index(drop=True)

    def __len__(self) -> int:
        return len(self._frame)

    @property
    def keys(self) -> set[str]:
        return set(self._frame["key"])

    def summaries(self) -> dict[str, str]:
        """key -> summary text."""
        return dict(zip(self._frame["key"], self._frame["summary"], strict=True))

    def append(self, frame: pd.DataFrame) -> None:
        """Persist the rows of ``frame`` whose keys are new, as one part written atomically."""
        new = frame[~frame["key"].isin(self.keys)].drop_duplicates("key")
        if new.empty:
            return
        table = pa.Table.from_pandas(new[CACHE_COLUMNS], schema=SCHEMA, preserve_index=False)
        self.folder.mkdir(parents=True, exist_ok=True)
        # Names sort by time, so "first row per key" means the earliest written.
        name = f"part-{time.time_ns():020d}-{os.getpid()}.parquet"
        atomic_write(self.folder / name, lambda tmp: pq.write_table(table, tmp))
        self._frame = pd.concat([self._frame, table.to_pandas()], ignore_index=True)

    def to_frame(self) -> pd.DataFrame:
        return self._frame.copy()


class SummaryCacheDataset(AbstractDataset[pd.DataFrame, SummaryCache]):
    """Loads a ``SummaryCache`` handle; saving a frame appends its new keys.

    An empty or absent folder is a valid, empty cache, so a first run finds its input present.

    Example catalog entry::

        summary_cache:
          type: llm_seqrec.datasets.SummaryCacheDataset
          filepath: data/04_feature/summary_cache
    """

    def __init__(self, *, filepath: str, metadata: dict | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}

    def load(self) -> SummaryCache:
        return SummaryCache(self._filepath)

    def save(self, data: pd.DataFrame) -> None:
        SummaryCache(self._filepath).append(data)

    def _exists(self) -> bool:
        return True

    def preview(self, nrows: int = 20) -> TablePreview:
        """kedro-viz preview: the latest summaries, list columns as text."""
        frame = self.load().to_frame().tail(nrows)
        for column in ("input_keys", "item_ids"):
            frame[column] = frame[column].map(lambda values: " ".join(map(str, values)))
        return frame.to_dict(orient="split")
