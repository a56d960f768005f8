"""The summary cache: a folder of parquet parts (``data.parts``), one row per summary
(``llm.summarize.CACHE_COLUMNS``), keyed by the summary's content key; a key already present is not
appended again."""

from __future__ import annotations

import pyarrow as pa

from llm_seqrec.data.parts import KeyedParts
from llm_seqrec.datasets.parts_cache import PartsCacheDataset
from llm_seqrec.llm.summarize import CACHE_COLUMNS

_TYPES = {
    "key": pa.string(), "user_idx": pa.int64(), "cutoff": pa.string(), "method": pa.string(),
    "level_or_step": pa.int64(), "input_keys": pa.list_(pa.string()), "item_ids": pa.list_(pa.int64()),
    "prompt_version": pa.string(), "model": pa.string(), "summary": pa.string(),
    "tokens_in": pa.int64(), "tokens_out": pa.int64(), "seconds": pa.float64(),
}
SCHEMA = pa.schema([(name, _TYPES[name]) for name in CACHE_COLUMNS])


class SummaryCache(KeyedParts):
    """A handle on the cache folder: which keys it holds, their summaries, and appending new rows."""

    schema = SCHEMA

    def summaries(self) -> dict[str, str]:
        """key -> summary text."""
        return dict(zip(self._frame["key"], self._frame["summary"], strict=True))


class SummaryCacheDataset(PartsCacheDataset):
    """Loads a ``SummaryCache`` handle; saving a frame appends its new keys.

    Example catalog entry::

        summary_cache:
          type: llm_seqrec.datasets.SummaryCacheDataset
          filepath: data/04_feature/summary_cache
    """

    handle = SummaryCache
