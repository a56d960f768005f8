"""The score cache: the rows of ``<model>_scores`` tables already scored, so no row is scored twice.

A stored row is what a score-table row holds (rank, n_ranked, top_items, candidate_scores), keyed by a
hash of everything it was computed from: the scorer's ``fingerprint()`` (its weights, prompt and
scoring settings, the frozen backbone's name and dtype), the split and protocol, the user, the history
the model saw, the summary shown, and the target with ``exclude_seen`` (full ranking) or the candidate
list (sampled). The fingerprint is also a column, so a scorer's rows load alone and a changed model
invalidates exactly its own rows. ``score_table(..., cache=)`` reads and appends it; the folder is
``data.parts``' (parts appended atomically, never rewritten): delete it to clear the cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa

from llm_seqrec.data.fingerprint import data_fingerprint
from llm_seqrec.data.parts import PartsStore
from llm_seqrec.data.schema import SCORE_COLUMNS

# Part of every key: bump it when scoring code changes what a row holds for the same inputs.
CACHE_VERSION = 1
_TYPES = {
    "key": pa.string(), "fingerprint": pa.string(), "user_idx": pa.int64(), "split": pa.string(),
    "protocol": pa.string(), "rank": pa.float64(), "n_ranked": pa.int64(), "top_items": pa.list_(pa.int64()),
    "candidate_scores": pa.list_(pa.float64()),
}
SCHEMA = pa.schema([(name, _TYPES[name]) for name in ["key", "fingerprint", *SCORE_COLUMNS]])


def row_key(fingerprint: str, split: str, protocol: str, user: int, history: Sequence[int], summary: str | None,
            scope: object) -> str:
    """A score row's key; ``scope`` is ``(target, exclude_seen)`` for full ranking, the candidates for sampled."""
    return data_fingerprint(CACHE_VERSION, fingerprint, split, protocol, int(user), [int(i) for i in history], summary, scope)


class ScoreCache:
    """A handle on the cache folder: each scorer's stored rows (read once per fingerprint) and appending."""

    def __init__(self, folder: str | Path) -> None:
        self.store = PartsStore(folder, SCHEMA)
        self.folder = self.store.folder
        self._rows: dict[str, pd.DataFrame] = {}
        self._keys: dict[str, set[str]] = {}  # each loaded scorer's keys, so appending never scans its rows
        self._written: dict[str, list[pd.DataFrame]] = {}  # parts written since its rows were last put together

    def rows(self, fingerprint: str) -> pd.DataFrame:
        """The stored rows of scorer ``fingerprint``, indexed by key."""
        if fingerprint not in self._rows:
            self._rows[fingerprint] = self.store.read([("fingerprint", "=", fingerprint)]).set_index("key")
            self._keys[fingerprint] = set(self._rows[fingerprint].index)
        if self._written.get(fingerprint):
            self._rows[fingerprint] = pd.concat([self._rows[fingerprint], *self._written.pop(fingerprint)])
        return self._rows[fingerprint]

    def append(self, frame: pd.DataFrame) -> None:
        """Persist the rows of ``frame`` (``key``, ``fingerprint`` and the score columns) whose keys are new,
        one part per scorer, each written atomically."""
        for fingerprint, group in frame.groupby("fingerprint", sort=False):
            fingerprint = str(fingerprint)
            if fingerprint not in self._keys:
                self.rows(fingerprint)
            keys = self._keys[fingerprint]
            new = group[[key not in keys for key in group["key"]]].drop_duplicates("key")
            if not new.empty:
                self._written.setdefault(fingerprint, []).append(self.store.write(new).set_index("key"))
                keys.update(new["key"])

    def __len__(self) -> int:
        return len(self.to_frame())

    def to_frame(self) -> pd.DataFrame:
        return self.store.read()


def merge_rows(cached: pd.DataFrame, scored: list[pd.DataFrame], order: Sequence[str]) -> pd.DataFrame:
    """The score rows of the keys ``order``, in that order: the cached row where there is one (so a stored
    row always reads back as stored), else the freshly scored one (``scored`` frames carry ``key``)."""
    hits = cached.loc[cached.index.intersection(pd.Index(order))].reset_index()
    rows = pd.concat([hits[["key", *SCORE_COLUMNS]], *(t[["key", *SCORE_COLUMNS]] for t in scored)], ignore_index=True)
    rows = rows.drop_duplicates("key", keep="first").set_index("key")
    return rows.loc[list(order)].reset_index(drop=True)
