"""What a training run leaves behind: the per-epoch training-log table every trained model writes,
and the peak memory each epoch is measured with."""

from __future__ import annotations

import threading

import pandas as pd
import psutil
import torch

from llm_seqrec.data.schema import TRAINING_LOG_COLUMNS


def training_log(model: str, history: list[dict], stage: int = 1, backbone_dtype: str = "") -> pd.DataFrame:
    """The ``<model>_training_log`` table every trained model writes: one row per epoch of ``fit``'s
    history (``epoch_end`` true), after a row per validation inside that epoch (false), ``examples_seen``
    the x of a learning curve; ``stage`` numbers successive ``fit`` calls of one model, as Laser's two
    stages. The last row of a ``fit`` says in ``stopped_by`` what ended it. ``backbone_dtype`` is the dtype the frozen
    LLM ran in (``Backbone.dtype_name``); empty for a model without one."""
    records = []
    for record in history:
        shared = {"model": model, "stage": stage, "epoch": record["epoch"], "backbone_dtype": backbone_dtype}
        records += [{**shared, **point, "epoch_end": False} for point in record.get("within_epoch", [])]
        records.append({**shared, **record, "epoch_end": True})
    frame = pd.DataFrame(records, columns=TRAINING_LOG_COLUMNS)
    return frame.astype({"model": str, "stage": "int64", "epoch": "int64", "loss": "float64", "metric": "float64",
                         "seconds": "float64", "trainable_parameters": "Int64", "peak_rss_mb": "float64",
                         "peak_cuda_mb": "float64", "stopped_by": "object", "backbone_dtype": str,
                         "examples_seen": "Int64", "epoch_end": bool})


class PeakMemory:
    """The peak resident memory of this process (MiB) while the block runs, sampled every
    ``interval`` seconds by a thread (psutil), and on CUDA the peak allocated device memory."""

    def __init__(self, device: torch.device, interval: float = 0.05) -> None:
        self._device, self._interval = torch.device(device), interval
        self._process = psutil.Process()
        self._stop = threading.Event()
        self.peak_rss_mb: float = 0.0
        self.peak_cuda_mb: float | None = None

    def _sample(self) -> None:
        self.peak_rss_mb = max(self.peak_rss_mb, self._process.memory_info().rss / 2**20)

    def _watch(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> PeakMemory:
        if self._device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self._device)
        self._sample()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        if self._device.type == "cuda":
            self.peak_cuda_mb = torch.cuda.max_memory_allocated(self._device) / 2**20


