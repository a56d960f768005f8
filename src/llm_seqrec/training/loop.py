"""The one training loop every model in the project uses.

``fit`` owns what is the same for every model: device, seeding, AdamW over the trainable parameters,
gradient accumulation, autocast (``precision``), validation every ``eval_every`` epochs with early
stopping on a higher-is-better metric, the best weights, a per-epoch history, and resumable
checkpoints. The model supplies only ``loss_fn``, ``make_batches`` and ``validate``.

Training ends for one of three reasons, recorded as ``stopped_by`` (``STOP_REASONS``) on the last
epoch of the history: ``patience`` (``patience`` epochs without a better validation metric),
``epoch_cap`` (``epochs`` reached) or ``time_budget`` (the next group of ``eval_every`` epochs would
not end within ``max_minutes``; logged as a warning, since the model was still improving).

Checkpoints hold tensors and plain Python values only (loaded with ``weights_only=True``). A checkpoint
is resumed only when the run it recorded is the same run: the same ``run_config`` from the caller (model
configuration, a fingerprint of the data) and the same training settings, except those that do not
change the epochs already done (``epochs``, ``patience``, ``max_minutes``, ``progress``,
``checkpoint_dir``, ``device``). So raising ``epochs``, ``patience`` or ``max_minutes`` continues a
finished run, and repeating it returns at once.

Every epoch's record also says what it cost: the trainable parameters, its seconds and the peak memory
while it ran (``training_log`` turns a history into the one training-log table every model writes).
"""

from __future__ import annotations

import json
import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import torch
from torch import nn
from tqdm.auto import tqdm

from llm_seqrec.llm.device import choose_device, choose_dtype, dtype_name
from llm_seqrec.params import TrainingParams

logger = logging.getLogger(__name__)

# Settings that may differ between a checkpoint and the run resuming it.
RESUMABLE_CHANGES = frozenset({"epochs", "patience", "max_minutes", "progress", "checkpoint_dir", "device"})
STOP_REASONS = ("patience", "epoch_cap", "time_budget")


@dataclass
class FitResult:
    # The trained part of the best ``state_dict`` (all but frozen parameters), as CPU tensors;
    # the model holds these weights after ``fit``.
    best_state_dict: dict[str, torch.Tensor]
    # Per epoch: epoch (1-based), loss (mean over batches), metric (None if not validated), seconds,
    # trainable_parameters, peak_rss_mb (this process), peak_cuda_mb (None off CUDA), stopped_by
    # (None but on the last epoch: one of STOP_REASONS).
    history: list[dict]
    best_metric: float | None  # None when no validation ran
    best_epoch: int
    stopped_by: str  # one of STOP_REASONS


def fit(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    make_batches: Callable[[int, torch.Generator], Iterable[Any]],
    validate: Callable[[nn.Module], float] | None,
    params: TrainingParams,
    name: str,
    run_config: dict | None = None,
    on_epoch_end: Callable[[dict], None] | None = None,
) -> FitResult:
    """Train ``model`` and return its best weights (by ``validate``, higher is better) and history.

    ``make_batches(epoch, generator)`` yields the batches of an epoch (0-based), drawing any randomness
    from ``generator``, which is seeded from ``params.seed`` and the epoch so an epoch's batches do not
    depend on whether the run was resumed. Batches may be tensors or dicts, lists or tuples of them; they
    are moved to the model's device. ``loss_fn(model, batch)`` returns the batch's mean loss.
    ``validate(model)`` is called in eval mode without gradients every ``eval_every`` epochs; when no
    validation ran (no ``validate``, or fewer epochs than ``eval_every``) the last weights are the result.
    ``on_epoch_end(record)`` runs after the epoch's checkpoint is written.
    ``run_config`` (JSON-serialisable) identifies the run for resuming, beside the training settings.
    """
    device = choose_device(params.device)
    autocast_dtype = training_dtype(device, params.precision)
    model.to(device)
    seed_everything(params.seed)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=params.lr, weight_decay=params.weight_decay
    )
    config = _plain({"run": run_config or {}, "training": params.model_dump(exclude=RESUMABLE_CHANGES)})
    checkpoint = Path(params.checkpoint_dir) / f"{name}.pt" if params.checkpoint_dir is not None else None

    state = {"epoch": 0, "best_metric": None, "best_epoch": 0, "best_state": None, "history": []}
    if checkpoint is not None and checkpoint.is_file():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if saved["config"] == config:
            _load_trained_state(model, saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            _set_rng_state(saved["rng"])
            state = {k: saved[k] for k in state}
            logger.info("%s: resuming from %s after epoch %d", name, checkpoint, state["epoch"])
        else:
            logger.warning("%s: checkpoint %s is from a different configuration; starting afresh", name, checkpoint)

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if autocast_dtype != torch.float32:
        logger.info("%s: training steps in %s autocast", name, dtype_name(autocast_dtype))
    model.train()
    while (stopped_by := _stop_reason(state, params)) is None:
        epoch = state["epoch"]
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(params.seed * 1_000_003 + epoch)
        with PeakMemory(device) as memory:
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype != torch.float32):
                loss = _train_epoch(model, loss_fn, make_batches(epoch, generator), optimizer, params, device,
                                    desc=f"{name} epoch {epoch + 1}/{params.epochs}")
            metric = None
            if validate is not None and (epoch + 1) % params.eval_every == 0:
                model.eval()
                with torch.no_grad():
                    metric = float(validate(model))
                model.train()
        state["epoch"] = epoch + 1
        if metric is not None and (state["best_metric"] is None or metric > state["best_metric"]):
            state["best_metric"], state["best_epoch"] = metric, epoch + 1
            state["best_state"] = _trained_state(model, copy=True)
        record = {"epoch": epoch + 1, "loss": loss, "metric": metric, "seconds": time.perf_counter() - started,
                  "trainable_parameters": trainable, "peak_rss_mb": memory.peak_rss_mb, "peak_cuda_mb": memory.peak_cuda_mb}
        state["history"].append(record)
        logger.info("%s epoch %d: loss %.4f, metric %s, %.1fs", name, epoch + 1, loss,
                    "-" if metric is None else f"{metric:.4f}", record["seconds"])
        if checkpoint is not None:
            _save_checkpoint(checkpoint, {**state, "config": config, "model": _trained_state(model),
                                          "optimizer": optimizer.state_dict(), "rng": _rng_state()})
        if on_epoch_end is not None:
            on_epoch_end(record)

    _log_stop(name, stopped_by, state, params)
    if state["best_state"] is None:
        state["best_state"], state["best_epoch"] = _trained_state(model, copy=True), state["epoch"]
    _load_trained_state(model, state["best_state"])
    model.eval()
    history = [{**record, "stopped_by": None} for record in state["history"]]
    history[-1]["stopped_by"] = stopped_by
    return FitResult(state["best_state"], history, state["best_metric"], state["best_epoch"], stopped_by)


def training_dtype(device: torch.device, precision: str) -> torch.dtype:
    """The autocast dtype of ``TrainingParams.precision`` on ``device``: ``auto`` is bfloat16 where
    ``choose_dtype`` picks it (a GPU with bf16; never a CPU, where bf16 autocast measured slower for
    SASRec too: bench_sasrec), else float32."""
    dtype = choose_dtype(device, precision)
    return dtype if dtype == torch.bfloat16 else torch.float32


TRAINING_LOG_COLUMNS = ["model", "stage", "epoch", "loss", "metric", "seconds",
                        "trainable_parameters", "peak_rss_mb", "peak_cuda_mb", "stopped_by", "backbone_dtype"]


def training_log(model: str, history: list[dict], stage: int = 1, backbone_dtype: str = "") -> pd.DataFrame:
    """The ``<model>_training_log`` table every trained model writes: one row per epoch of ``fit``'s
    history (``stage`` numbers successive ``fit`` calls of one model, as Laser's two stages); the last
    row of a ``fit`` says in ``stopped_by`` what ended it. ``backbone_dtype`` is the dtype the frozen
    LLM ran in (``Backbone.dtype_name``); empty for a model without one."""
    records = [{"model": model, "stage": stage, **record, "backbone_dtype": backbone_dtype} for record in history]
    frame = pd.DataFrame(records, columns=TRAINING_LOG_COLUMNS)
    return frame.astype({"model": str, "stage": "int64", "epoch": "int64", "loss": "float64", "metric": "float64",
                         "seconds": "float64", "trainable_parameters": "Int64", "peak_rss_mb": "float64",
                         "peak_cuda_mb": "float64", "stopped_by": "object", "backbone_dtype": str})


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


def _train_epoch(model, loss_fn, batches, optimizer, params: TrainingParams, device, desc: str) -> float:
    """One pass; gradients of ``grad_accumulation`` batches are averaged into each step (a trailing
    partial group is stepped too, with proportionally smaller gradients)."""
    total, count = 0.0, 0
    optimizer.zero_grad(set_to_none=True)
    for batch in tqdm(batches, desc=desc, leave=False, disable=not params.progress):
        loss = loss_fn(model, _to_device(batch, device))
        (loss / params.grad_accumulation).backward()
        total, count = total + loss.item(), count + 1
        if count % params.grad_accumulation == 0:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    if count % params.grad_accumulation:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if count == 0:
        raise ValueError("make_batches yielded no batch")
    return total / count


def _stop_reason(state: dict, params: TrainingParams) -> str | None:
    """Why training stops before the next epoch (one of ``STOP_REASONS``), or None to go on.

    Patience is judged at a validation, so no trained epoch goes unseen; so is the time budget, which
    lets a group of ``eval_every`` epochs start only if, at the mean epoch time so far, it ends within
    ``max_minutes``."""
    history = state["history"]
    validated = bool(history) and history[-1]["metric"] is not None
    if validated and state["epoch"] - state["best_epoch"] >= params.patience:
        return "patience"
    if state["epoch"] >= params.epochs:
        return "epoch_cap"
    if params.max_minutes is not None and history and state["epoch"] % params.eval_every == 0:
        spent = sum(record["seconds"] for record in history)
        if spent + params.eval_every * spent / len(history) > params.max_minutes * 60:
            return "time_budget"
    return None


def _log_stop(name: str, stopped_by: str, state: dict, params: TrainingParams) -> None:
    minutes = sum(record["seconds"] for record in state["history"]) / 60
    best = ("no validation" if state["best_metric"] is None
            else f"best validation {state['best_metric']:.4f} at epoch {state['best_epoch']}")
    if stopped_by == "time_budget":
        logger.warning("%s: stopped by the time budget (%g min) at epoch %d after %.1f min, validation still rising "
                       "(%s; patience %d not spent)", name, params.max_minutes, state["epoch"], minutes, best,
                       params.patience)
    else:
        reason = {"patience": f"by patience ({params.patience} epochs)", "epoch_cap": f"at the epoch cap ({params.epochs})"}
        logger.info("%s: stopped %s at epoch %d after %.1f min (%s)", name, reason[stopped_by], state["epoch"],
                    minutes, best)


def _to_device(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _frozen_names(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}


def _trained_state(model: nn.Module, copy: bool = False) -> dict[str, torch.Tensor]:
    """``state_dict`` without frozen parameters: a frozen LLM backbone is neither copied nor checkpointed."""
    frozen = _frozen_names(model)
    return {k: v.detach().to("cpu", copy=True) if copy else v for k, v in model.state_dict().items() if k not in frozen}


def _load_trained_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    frozen = _frozen_names(model)
    if unexpected or set(missing) - frozen:
        raise RuntimeError(f"state does not fit the model: missing {sorted(set(missing) - frozen)}, unexpected {sorted(unexpected)}")


def _plain(value) -> Any:
    """The JSON view of ``value`` (tuples become lists, paths strings), so configs compare after a reload."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch; call it before building a model so its initial weights repeat."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }


def _set_rng_state(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    n = rng["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = rng["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))


def _save_checkpoint(path: Path, payload: dict) -> None:
    """Write to a temporary sibling and rename, so an interruption leaves the previous checkpoint whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


__all__ = ["STOP_REASONS", "TRAINING_LOG_COLUMNS", "FitResult", "PeakMemory", "fit", "seed_everything", "training_dtype",
           "training_log"]
