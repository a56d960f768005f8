"""The one training loop every model in the project uses.

``fit`` owns what is the same for every model: device, seeding, AdamW over the trainable parameters
(its learning rate decayed per epoch with ``lr_decay``), gradient accumulation, autocast (``precision``),
validation every ``eval_every`` epochs (and, with ``validate_every_examples``, inside epochs: a learning
curve's points) with early stopping on a higher-is-better metric, the best weights, a per-epoch history, and resumable checkpoints (at epoch
ends). The model supplies only ``loss_fn``, ``make_batches`` and ``validate``; when training stops, and
why, is ``stopping.py``'s.

Device placement, mixed precision, gradient accumulation and data parallelism go through Hugging Face
Accelerate (``training.processes``): one process by default, the numeric path of a plain loop; with
``processes`` > 1, the run is forked into that many processes that share each batch (gloo on a CPU,
NCCL on GPUs), the main one validating (its metric broadcast, so every process stops together) and
writing the checkpoints.

Checkpoints hold tensors and plain Python values only (loaded with ``weights_only=True``). A checkpoint
is resumed only when the run it recorded is the same run: the same ``run_config`` from the caller (model
configuration, a fingerprint of the data) and the same training settings, except those that do not
change the epochs already done (``epochs``, ``patience``, ``max_minutes``, ``progress``,
``checkpoint_dir``, ``device``, ``processes``). So raising ``epochs``, ``patience`` or ``max_minutes`` continues a
finished run, and repeating it returns at once.

Every epoch's record also says what it cost: the trainable parameters, its seconds and the peak memory
while it ran (``training_log`` turns a history into the one training-log table every model writes).
"""

from __future__ import annotations

import contextlib
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
from llm_seqrec.training.stopping import STOP_REASONS, log_stop, stop_reason

logger = logging.getLogger(__name__)

# Settings that may differ between a checkpoint and the run resuming it.
RESUMABLE_CHANGES = frozenset({"epochs", "patience", "max_minutes", "progress", "checkpoint_dir", "device", "processes"})
# Settings left out of a checkpoint's configuration while unset, so checkpoints written before they existed resume.
NEWER_SETTINGS = frozenset({"validate_every_examples", "lr_decay"})


@dataclass
class FitResult:
    # The trained part of the best ``state_dict`` (all but frozen parameters), as CPU tensors;
    # the model holds these weights after ``fit``.
    best_state_dict: dict[str, torch.Tensor]
    # Per epoch: epoch (1-based), loss (mean over batches), metric (None if not validated), seconds,
    # trainable_parameters, peak_rss_mb (this process), peak_cuda_mb (None off CUDA), stopped_by
    # (None but on the last epoch: one of STOP_REASONS), examples_seen (training examples of this fit up
    # to the epoch's end, as ``batch_examples`` counts them) and within_epoch (the validations inside the
    # epoch, ``validate_every_examples``: dicts of examples_seen, loss (the epoch's mean so far), metric).
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
    ``validate(model)`` is called in eval mode without gradients every ``eval_every`` epochs (and inside
    every epoch with ``validate_every_examples``, counting examples with ``batch_examples``); when no
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
    config = plain({"run": run_config or {}, "training": {k: v for k, v in asdict(params).items()
                                                           if k not in RESUMABLE_CHANGES and not (k in NEWER_SETTINGS and v is None)}})
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
    while (stopped_by := stop_reason(state, params)) is None:
        epoch = state["epoch"]
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(params.seed * 1_000_003 + epoch)
        if params.lr_decay is not None:  # a function of the epoch alone, so a resumed run continues it
            for group in optimizer.param_groups:
                group["lr"] = params.lr * params.lr_decay ** epoch
        # Examples of this fit before the epoch (None after resuming a checkpoint that did not count them).
        before = state["history"][-1].get("examples_seen") if state["history"] else 0
        within = []

        def validate_within(examples: int, loss: float) -> None:
            metric = _validated(accelerator, model, validate, in_autocast=autocast_dtype != torch.float32)
            within.append({"examples_seen": None if before is None else before + examples, "loss": loss, "metric": metric})
            _keep_if_best(state, metric, epoch + 1, model)

        with PeakMemory(device) as memory:
            with accelerator.autocast():
                loss, examples = _train_epoch(accelerator, objective, make_batches(epoch, generator), optimizer, shard,
                                              desc=f"{name} epoch {epoch + 1}/{params.epochs}", progress=params.progress and main,
                                              interval=params.validate_every_examples if validate is not None else None,
                                              validate_within=validate_within)
            metric = None
            if validate is not None and (epoch + 1) % params.eval_every == 0:
                metric = _validated(accelerator, model, validate, in_autocast=False)
        seconds = time.perf_counter() - started
        if accelerator.num_processes > 1:  # the main process's time, so that every process stops alike
            [seconds] = broadcast_object_list([seconds], from_process=0)
        state["epoch"] = epoch + 1
        _keep_if_best(state, metric, epoch + 1, model)
        record = {"epoch": epoch + 1, "loss": loss, "metric": metric, "seconds": seconds,
                  "trainable_parameters": trainable, "peak_rss_mb": memory.peak_rss_mb, "peak_cuda_mb": memory.peak_cuda_mb,
                  "examples_seen": None if before is None else before + examples, "within_epoch": within}
        state["history"].append(record)
        logger.info("%s epoch %d: loss %.4f, metric %s, %.1fs", name, epoch + 1, loss,
                    "-" if metric is None else f"{metric:.4f}", record["seconds"])
        if checkpoint is not None and main:
            save_checkpoint(checkpoint, {**state, "config": config, "model": trained_state(model),
                                          "optimizer": optimizer.state_dict(), "rng": rng_state()})
        if on_epoch_end is not None and main:
            on_epoch_end(record)

    log_stop(name, stopped_by, state, params)
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


def _train_epoch(accelerator, objective, batches, optimizer, shard, desc: str, progress: bool, interval: int | None,
                 validate_within: Callable[[int, float], None]) -> tuple[float, int]:
    """One pass: its mean loss and its examples (``batch_examples``). Gradients of ``grad_accumulation``
    batches are averaged into each step (a trailing partial group is stepped too, with proportionally
    smaller gradients). With several processes each computes its share of a batch, weighted so that the
    all-reduced gradient is the batch's, and the loss recorded is the batch's (the weighted parts summed
    over processes). ``validate_within(examples, mean loss so far)`` runs when a batch brought the epoch's
    examples past a multiple of ``interval`` and another batch follows."""
    world, rank = accelerator.num_processes, accelerator.process_index
    per_step = accelerator.gradient_accumulation_steps
    total, count, examples, due = 0.0, 0, 0, False
    accelerator.step = 0  # accumulation groups start with the epoch
    optimizer.zero_grad(set_to_none=True)
    batches = iter(tqdm(batches, desc=desc, leave=False, disable=not progress))
    upcoming = next(batches, _END)
    while upcoming is not _END:
        batch, upcoming = upcoming, next(batches, _END)
        if due:
            validate_within(examples, total / count)
        size = batch_examples(batch)
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
        total, count, examples = total + value, count + 1, examples + size
        due = interval is not None and examples // interval > (examples - size) // interval
    if count == 0:
        raise ValueError("make_batches yielded no batch")
    return total / count, examples


def batch_examples(batch) -> int:
    """The training examples a batch holds: a tensor's rows; a dict's first value's; a list or tuple whose
    first element is a tensor is aligned tensors (its rows), any other list one example per element. So
    SASRec counts users (sequences, not target positions), RA-Rec and Laser users, the LoRA trainers prompts."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, dict):
        return batch_examples(next(iter(batch.values())))
    if isinstance(batch, list | tuple):
        return batch_examples(batch[0]) if batch and isinstance(batch[0], torch.Tensor) else len(batch)
    raise TypeError(f"cannot count the examples of a {type(batch).__name__} batch")


def _validated(accelerator, model: nn.Module, validate: Callable[[nn.Module], float], in_autocast: bool) -> float:
    """``validate(model)`` in the main process, in eval mode without gradients, in float32 (autocast off
    ``in_autocast``), then back in train mode; with several processes its metric is broadcast, so that
    every process keeps the same best point and stops alike."""
    metric = None
    if accelerator.is_main_process:
        model.eval()
        with torch.no_grad(), torch.autocast(accelerator.device.type, enabled=False) if in_autocast else contextlib.nullcontext():
            metric = float(validate(model))
        model.train()
    if accelerator.num_processes > 1:
        [metric] = broadcast_object_list([metric], from_process=0)
    return metric


def _keep_if_best(state: dict, metric: float | None, epoch: int, model: nn.Module) -> None:
    if metric is not None and (state["best_metric"] is None or metric > state["best_metric"]):
        state["best_metric"], state["best_epoch"] = metric, epoch
        state["best_state"] = trained_state(model, copy=True)


_END = object()
