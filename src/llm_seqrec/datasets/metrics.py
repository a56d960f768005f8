"""``metrics.csv``: one long-form file for every data set, each run replacing its own data set's rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io.core import AbstractDataset, DatasetError

from llm_seqrec.data.files import atomic_write


class MetricsCSVDataset(AbstractDataset[pd.DataFrame, pd.DataFrame]):
    """A CSV whose ``save`` replaces the rows of the data sets it is given and keeps the others.

    A run on MovieLens then leaves the Amazon rows of an earlier run in place, so the file stays
    the one machine-readable comparison across data sets. Written to a temporary sibling and
    renamed, so an interrupted save leaves the previous file whole.
    """

    def __init__(self, *, filepath: str, key: str = "dataset", metadata: dict | None = None) -> None:
        self._filepath = Path(filepath)
        self._key = key
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "key": self._key}

    def load(self) -> pd.DataFrame:
        return pd.read_csv(self._filepath)

    def save(self, data: pd.DataFrame) -> None:
        if self._key not in data.columns:
            raise DatasetError(f"{self._filepath}: the metrics to save have no {self._key!r} column")
        frame = data
        if self._filepath.is_file():
            kept = self.load()
            kept = kept[~kept[self._key].isin(data[self._key].unique())]
            frame = pd.concat([kept, data], ignore_index=True)
        atomic_write(self._filepath, lambda tmp: frame.to_csv(tmp, index=False))

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def preview(self, nrows: int = 50) -> dict:
        """kedro-viz preview: the first rows as a table."""
        return self.load().head(nrows).astype(str).to_dict(orient="split")
