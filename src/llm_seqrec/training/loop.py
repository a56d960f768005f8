"""The one training loop every model in the project uses.

``fit`` owns what is the same for every model: device, seeding, AdamW over the trainable parameters,
gradient accumulation, autocast (``precision``), validation every ``eval_every`` epochs with early
stopping on a higher-is-better metric, the best weights, a per-epoch history, and resumable
checkpoints. The model supplies only ``loss_fn``, ``make_batches`` and ``validate``.

Device placement, mixed precision, gradient accumulation and data parallelism go through Hugging Face
Accelerate (``training.processes``): one process by default, the numeric path of a plain loop; with
``processes`` > 1, the run is forked into that many processes that share each batch (gloo on a CPU,
NCCL on GPUs), the main one validating (its metric broadcast, so every process stops together) and
writing the checkpoints.

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

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import broadcast_object_list, send_to_device
from torch import nn
from tqdm.auto import tqdm

from llm_seqrec.llm.device import choose_device, choose_dtype, dtype_name
from llm_seqrec.training.config import TrainingConfig
from llm_seqrec.training.log import PeakMemory
from llm_seqrec.training.processes import Objective, launch, make_accelerator, split_rows
from llm_seqrec.training.state import (
    load_trained_state,
    plain,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
    trained_state,
)

logger = logging.getLogger(__name__)

# Settings that may differ between a checkpoint and the run resuming it.
RESUMABLE_CHANGES = frozenset({"epochs", "patience", "max_minutes", "progress", "checkpoint_dir", "device", "processes"})
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
    params: TrainingConfig,
    name: str,
    run_config: dict | None = None,
    on_epoch_end: Callable[[dict], None] | None = None,
    shard: Callable[[Any, int, int], tuple[Any, float]] = split_rows,
) -> FitResult:
    """Train ``model`` and return its best weights (by ``validate``, higher is better) and history.

    ``make_batches(epoch, generator)`` yields the batches of an epoch (0-based), drawing any randomness
    from ``generator``, which is seeded from ``params.seed`` and the epoch so an epoch's batches do not
    depend on whether the run was resumed. Batches may be tensors or dicts, lists or tuples of them; they
    are moved to the model's device. ``loss_fn(model, batch)`` returns the batch's mean loss.
    ``validate(model)`` is called in eval mode without gradients every ``eval_every`` epochs; when no
    validation ran (no ``validate``, or fewer epochs than ``eval_every``) the last weights are the result.
    ``on_epoch_end(record)`` runs after the epoch's checkpoint is written (in the main process).
    ``run_config`` (JSON-serialisable) identifies the run for resuming, beside the training settings.
    With ``params.processes`` > 1, ``shard(batch, rank, processes)`` gives a process its part of a batch
    and the part's weight in the batch's loss (``processes.split_rows``: a mean over rows); the parts'
    weighted losses must add up to the batch's. The model then stays on the device it was on.
    """
    device = choose_device(params.device)
    if params.processes == 1:
        return _fit(model, loss_fn, make_batches, validate, params, name, run_config, on_epoch_end, shard, device)
    run = partial(_fit, model, loss_fn, make_batches, validate, params, name, run_config, on_epoch_end, shard, device,
                  as_dict=True)
    result = FitResult(**launch(run, params.processes, device, name))
    load_trained_state(model, result.best_state_dict)
    model.eval()
    return result


def _fit(model, loss_fn, make_batches, validate, params: TrainingConfig, name: str, run_config, on_epoch_end, shard,
         device: torch.device, as_dict: bool = False):
    autocast_dtype = training_dtype(device, params.precision)
    accelerator = make_accelerator(device, autocast_dtype, params.grad_accumulation)
    device, rank, main = accelerator.device, accelerator.process_index, accelerator.is_main_process
    objective = accelerator.prepare_model(Objective(model, loss_fn))
    seed_everything(params.seed)
    if rank:  # another process's dropout masks
        torch.manual_seed(params.seed + rank)
    optimizer = accelerator.prepare_optimizer(torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=params.lr, weight_decay=params.weight_decay
    ))
    config = plain({"run": run_config or {}, "training": {k: v for k, v in asdict(params).items() if k not in RESUMABLE_CHANGES}})
    checkpoint = Path(params.checkpoint_dir) / f"{name}.pt" if params.checkpoint_dir is not None else None

    state = {"epoch": 0, "best_metric": None, "best_epoch": 0, "best_state": None, "history": []}
    if checkpoint is not None and checkpoint.is_file():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if saved["config"] == config:
            load_trained_state(model, saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            set_rng_state(saved["rng"])
            if rank:
                torch.manual_seed(params.seed + rank + 1_000_003 * saved["epoch"])
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
            with accelerator.autocast():
                loss = _train_epoch(accelerator, objective, make_batches(epoch, generator), optimizer, shard,
                                    desc=f"{name} epoch {epoch + 1}/{params.epochs}", progress=params.progress and main)
            metric = None
            if validate is not None and (epoch + 1) % params.eval_every == 0 and main:
                model.eval()
                with torch.no_grad():
                    metric = float(validate(model))
                model.train()
        seconds = time.perf_counter() - started
        if accelerator.num_processes > 1:  # the main process's metric and time, so that every process stops alike
            metric, seconds = broadcast_object_list([metric, seconds], from_process=0)
        state["epoch"] = epoch + 1
        if metric is not None and (state["best_metric"] is None or metric > state["best_metric"]):
            state["best_metric"], state["best_epoch"] = metric, epoch + 1
            state["best_state"] = trained_state(model, copy=True)
        record = {"epoch": epoch + 1, "loss": loss, "metric": metric, "seconds": seconds,
                  "trainable_parameters": trainable, "peak_rss_mb": memory.peak_rss_mb, "peak_cuda_mb": memory.peak_cuda_mb}
        state["history"].append(record)
        logger.info("%s epoch %d: loss %.4f, metric %s, %.1fs", name, epoch + 1, loss,
                    "-" if metric is None else f"{metric:.4f}", record["seconds"])
        if checkpoint is not None and main:
            save_checkpoint(checkpoint, {**state, "config": config, "model": trained_state(model),
                                          "optimizer": optimizer.state_dict(), "rng": rng_state()})
        if on_epoch_end is not None and main:
            on_epoch_end(record)

    _log_stop(name, stopped_by, state, params)
    if state["best_state"] is None:
        state["best_state"], state["best_epoch"] = trained_state(model, copy=True), state["epoch"]
    load_trained_state(model, state["best_state"])
    model.eval()
    history = [{**record, "stopped_by": None} for record in state["history"]]
    history[-1]["stopped_by"] = stopped_by
    result = FitResult(state["best_state"], history, state["best_metric"], state["best_epoch"], stopped_by)
    return asdict(result) if as_dict else result


def training_dtype(device: torch.device, precision: str) -> torch.dtype:
    """The autocast dtype of ``TrainingConfig.precision`` on ``device``: ``auto`` is bfloat16 where
    ``choose_dtype`` picks it (a GPU with bf16; never a CPU, where bf16 autocast measured slower for
    SASRec too: bench_sasrec), else float32."""
    dtype = choose_dtype(device, precision)
    return dtype if dtype == torch.bfloat16 else torch.float32


def _train_epoch(accelerator, objective, batches, optimizer, shard, desc: str, progress: bool) -> float:
    """One pass; gradients of ``grad_accumulation`` batches are averaged into each step (a trailing
    partial group is stepped too, with proportionally smaller gradients). With several processes each
    computes its share of a batch, weighted so that the all-reduced gradient is the batch's, and the
    loss recorded is the batch's (the weighted parts summed over processes)."""
    world, rank = accelerator.num_processes, accelerator.process_index
    per_step = accelerator.gradient_accumulation_steps
    total, count = 0.0, 0
    accelerator.step = 0  # accumulation groups start with the epoch
    optimizer.zero_grad(set_to_none=True)
    batches = iter(tqdm(batches, desc=desc, leave=False, disable=not progress))
    upcoming = next(batches, _END)
    while upcoming is not _END:
        batch, upcoming = upcoming, next(batches, _END)
        if upcoming is _END and (count + 1) % per_step:
            accelerator.step = per_step - 1  # the trailing partial group: accumulate() syncs and steps it
        with accelerator.accumulate(objective):
            if world == 1:
                loss = objective(send_to_device(batch, accelerator.device, non_blocking=True))
                accelerator.backward(loss)
                value = loss.item()
            else:
                part, weight = shard(batch, rank, world)
                loss = objective(None if part is None else send_to_device(part, accelerator.device, non_blocking=True))
                accelerator.backward(loss * (weight * world))  # DDP averages over the processes
                value = accelerator.reduce(loss.detach().float() * weight, reduction="sum").item()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        total, count = total + value, count + 1
    if count == 0:
        raise ValueError("make_batches yielded no batch")
    return total / count


def _stop_reason(state: dict, params: TrainingConfig) -> str | None:
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


def _log_stop(name: str, stopped_by: str, state: dict, params: TrainingConfig) -> None:
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


_END = object()
