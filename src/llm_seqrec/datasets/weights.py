"""Datasets that never leave a half-written file behind.

``TorchWeightsDataset`` stores a model as a folder holding ``config.json`` and
``model.safetensors`` (weights only, never a pickled module), optionally versioned.
``AtomicParquetDataset`` is a parquet file written to a temporary name and renamed into place.
Both write to a sibling temporary path first and rename, so an interrupted save keeps the
previous file intact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
from kedro.io.core import AbstractDataset, AbstractVersionedDataset, DatasetError, Version
from safetensors.torch import load_file, save_file

from llm_seqrec.data.files import atomic_write, atomic_write_dir


class TorchWeightsDataset(AbstractVersionedDataset[dict, dict]):
    """A model as ``{"config": dict, "state_dict": dict[str, Tensor]}`` in a folder.

    Example catalog entry::

        sasrec_model:
          type: llm_seqrec.datasets.TorchWeightsDataset
          filepath: data/06_models/sasrec
          versioned: true
    """

    def __init__(self, *, filepath: str, version: Version | None = None, metadata: dict | None = None) -> None:
        super().__init__(filepath=PurePosixPath(filepath), version=version, exists_function=os.path.exists)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}

    WEIGHTS = "model.safetensors"

    def _read_config(self, path: Path) -> dict:
        file = path / "config.json"
        if not file.is_file():
            raise DatasetError(f"{path} does not hold config.json")
        return json.loads(file.read_text())

    def _write_config(self, folder: Path, config: dict) -> None:
        (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str))

    def load(self) -> dict:
        path = Path(self._get_load_path())
        config = self._read_config(path)
        if not (path / self.WEIGHTS).is_file():
            raise DatasetError(f"{path} does not hold {self.WEIGHTS}")
        return {"config": config, "state_dict": load_file(str(path / self.WEIGHTS))}

    def save(self, data: dict) -> None:
        if set(data) != {"config", "state_dict"}:
            raise DatasetError(f"{type(self).__name__} saves {{'config', 'state_dict'}}, got keys {sorted(data)}")
        tensors = {k: v.detach().cpu().contiguous() for k, v in data["state_dict"].items()}

        def write(folder: Path) -> None:
            self._write_config(folder, data["config"])
            save_file(tensors, str(folder / self.WEIGHTS))

        atomic_write_dir(self._get_save_path(), write)

    def _exists(self) -> bool:
        try:
            path = Path(self._get_load_path())
        except DatasetError:
            return False
        return (path / self.WEIGHTS).is_file()

    def preview(self) -> dict:
        """kedro-viz preview: the model's config and parameter count."""
        data = self.load()
        n = int(sum(t.numel() for t in data["state_dict"].values()))
        return {"config": data["config"], "parameters": n}


class AtomicParquetDataset(AbstractDataset[pd.DataFrame, pd.DataFrame]):
    """A parquet file written to a temporary sibling and renamed, so readers never see half a file."""

    def __init__(
        self, *, filepath: str, save_args: dict | None = None, optional: bool = False, metadata: dict | None = None
    ) -> None:
        self._filepath = Path(filepath)
        self._save_args = save_args or {}
        # An optional file that is not there loads as an empty frame (a model not scored yet).
        self._optional = optional
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "optional": self._optional}

    def load(self) -> pd.DataFrame:
        if self._optional and not self._filepath.is_file():
            return pd.DataFrame()
        return pd.read_parquet(self._filepath)

    def save(self, data: pd.DataFrame) -> None:
        atomic_write(self._filepath, lambda tmp: data.to_parquet(tmp, index=False, **self._save_args))

    def _exists(self) -> bool:
        return self._optional or self._filepath.is_file()

    def preview(self, nrows: int = 20) -> dict:
        """kedro-viz preview: the first rows as a table."""
        frame = self.load().head(nrows)
        return frame.astype(str).to_dict(orient="split")


__all__ = ["AtomicParquetDataset", "TorchWeightsDataset"]
