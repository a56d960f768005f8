"""The Kedro side of a content-keyed cache folder (``data.parts``): a dataset that loads a handle.

A cache is a node's input, never its output: the node appends through the handle chunk by chunk as
work finishes, so an interrupted node keeps what it did. An empty or absent folder is a valid, empty
cache, so a first run finds its input present. Subclasses name the handle class (``handle``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from kedro.io.core import AbstractDataset
from kedro_datasets._typing import TablePreview


class PartsCacheDataset(AbstractDataset[pd.DataFrame, Any]):
    """Loads ``handle(filepath)``; saving a frame appends its new keys (``handle.append``)."""

    handle: ClassVar[type]

    def __init__(self, *, filepath: str, metadata: dict | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}

    def load(self) -> Any:
        return self.handle(self._filepath)

    def save(self, data: pd.DataFrame) -> None:
        self.load().append(data)

    def _exists(self) -> bool:
        return True

    def preview(self, nrows: int = 20) -> TablePreview:
        """kedro-viz preview: the latest rows, list columns as text."""
        frame = self.load().to_frame().tail(nrows)
        for column in frame.columns:
            if frame[column].map(lambda v: isinstance(v, list | tuple | np.ndarray)).any():
                frame[column] = frame[column].map(lambda values: " ".join(map(str, values)))
        return frame.to_dict(orient="split")
