"""A PEFT adapter as a ``save_pretrained`` folder, versioned and written atomically.

The folder holds what ``PeftModel.from_pretrained(base_model, folder)`` reads —
``adapter_config.json`` and ``adapter_model.safetensors`` (the adapter weights only) — plus
``recommender.json``, the rest of the model's configuration (head, prompt settings, backbone name,
provenance). In memory it is ``{"config": {"peft": <adapter_config>, **recommender}, "state_dict"}``,
the shape ``LLMRecommender.to_artifact`` returns.
"""

from __future__ import annotations

import json
from pathlib import Path

from kedro.io.core import DatasetError

from llm_seqrec.datasets.weights import TorchWeightsDataset

ADAPTER_CONFIG, ADAPTER_WEIGHTS, RECOMMENDER_CONFIG = "adapter_config.json", "adapter_model.safetensors", "recommender.json"


class PeftAdapterDataset(TorchWeightsDataset):
    """Example catalog entry::

        trsr.adapter:
          type: llm_seqrec.datasets.PeftAdapterDataset
          filepath: data/06_models/trsr/adapter
          versioned: true
    """

    WEIGHTS = ADAPTER_WEIGHTS

    def _read_config(self, path: Path) -> dict:
        files = [path / ADAPTER_CONFIG, path / RECOMMENDER_CONFIG]
        if not all(f.is_file() for f in files):
            raise DatasetError(f"{path} does not hold {ADAPTER_CONFIG} and {RECOMMENDER_CONFIG}")
        return {"peft": json.loads(files[0].read_text()), **json.loads(files[1].read_text())}

    def _write_config(self, folder: Path, config: dict) -> None:
        if "peft" not in config:
            raise DatasetError("PeftAdapterDataset saves {'config': {'peft': ..., ...}, 'state_dict': ...}")
        config = dict(config)
        (folder / ADAPTER_CONFIG).write_text(json.dumps(config.pop("peft"), indent=2, sort_keys=True))
        (folder / RECOMMENDER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True, default=str))


__all__ = ["PeftAdapterDataset"]
