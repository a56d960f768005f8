"""A PEFT adapter as a ``save_pretrained`` folder, versioned and written atomically.

The folder holds what ``PeftModel.from_pretrained(base_model, folder)`` reads —
``adapter_config.json`` and ``adapter_model.safetensors`` (the adapter weights only) — plus
``recommender.json``, the rest of the model's configuration (head, prompt settings, backbone name,
provenance). In memory it is ``{"config": {"peft": <adapter_config>, **recommender}, "state_dict"}``,
the shape ``LLMRecommender.to_artifact`` returns.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from kedro.io.core import DatasetError
from safetensors.torch import load_file, save_file

from llm_seqrec.datasets.weights import TorchWeightsDataset, _atomic_replace_dir

ADAPTER_CONFIG, ADAPTER_WEIGHTS, RECOMMENDER_CONFIG = "adapter_config.json", "adapter_model.safetensors", "recommender.json"


class PeftAdapterDataset(TorchWeightsDataset):
    """Example catalog entry::

        trsr.adapter:
          type: llm_seqrec.datasets.PeftAdapterDataset
          filepath: data/06_models/trsr/adapter
          versioned: true
    """

    def load(self) -> dict:
        path = Path(self._get_load_path())
        files = [path / name for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, RECOMMENDER_CONFIG)]
        if not all(f.is_file() for f in files):
            raise DatasetError(f"{path} does not hold {ADAPTER_CONFIG}, {ADAPTER_WEIGHTS} and {RECOMMENDER_CONFIG}")
        config = {"peft": json.loads(files[0].read_text()), **json.loads(files[2].read_text())}
        return {"config": config, "state_dict": load_file(str(files[1]))}

    def save(self, data: dict) -> None:
        if set(data) != {"config", "state_dict"} or "peft" not in data["config"]:
            raise DatasetError("PeftAdapterDataset saves {'config': {'peft': ..., ...}, 'state_dict': ...}")
        path = Path(self._get_save_path())
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            config = dict(data["config"])
            (tmp / ADAPTER_CONFIG).write_text(json.dumps(config.pop("peft"), indent=2, sort_keys=True))
            (tmp / RECOMMENDER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
            tensors = {k: v.detach().cpu().contiguous() for k, v in data["state_dict"].items()}
            save_file(tensors, str(tmp / ADAPTER_WEIGHTS))
            _atomic_replace_dir(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        # Kedro's versioned save wrapper clears the cached load and save versions itself.

    def _exists(self) -> bool:
        try:
            path = Path(self._get_load_path())
        except DatasetError:
            return False
        return (path / ADAPTER_WEIGHTS).is_file()


__all__ = ["PeftAdapterDataset"]
