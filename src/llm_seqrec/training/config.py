"""The shared training loop's settings: one definition, read by ``fit`` and, nested as ``training`` in
each model's parameter section, validated by ``params`` (the ``Annotated`` bounds are pydantic's)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from annotated_types import Ge, Gt, Le
from pydantic import ConfigDict


@dataclass(frozen=True)
class TrainingConfig:
    __pydantic_config__ = ConfigDict(extra="forbid")

    epochs: Annotated[int, Ge(1)] = 50
    batch_size: Annotated[int, Ge(1)] = 128
    grad_accumulation: Annotated[int, Ge(1)] = 1
    lr: Annotated[float, Gt(0)] = 1e-3
    # Exponential decay per epoch: epoch e (0-based) trains at lr * lr_decay ** e, so that validation
    # plateaus and early stopping ends the run sooner. None = a constant lr.
    lr_decay: Annotated[float, Gt(0), Le(1)] | None = None
    weight_decay: Annotated[float, Ge(0)] = 0.0
    patience: Annotated[int, Ge(1)] = 5  # epochs without a better validation metric before stopping
    # A time budget (minutes of training, validation included, across resumed runs): a group of
    # eval_every epochs starts only if, at the mean epoch time so far, it ends within it. None = no limit.
    max_minutes: Annotated[float, Gt(0)] | None = None
    # Autocast of the training steps: auto = bfloat16 where the device computes it natively
    # (llm.device.choose_dtype), else float32. Validation always runs in float32.
    precision: Literal["auto", "float32", "bfloat16"] = "float32"
    eval_every: Annotated[int, Ge(1)] = 1
    # Validate also inside an epoch, after the batch that brings the epoch's examples past each multiple of
    # this many (never after its last batch: the epoch end validates there), for a learning curve of long
    # epochs; such a point may hold the best weights, and patience still counts whole epochs after the one
    # that held the best point. None = at epoch ends only.
    validate_every_examples: Annotated[int, Ge(1)] | None = None
    eval_users: Annotated[int, Ge(1)] | None = None  # seeded validation sample for early stopping; None = all
    checkpoint_dir: Path | None = None  # where resumable checkpoints go; None = no checkpoints
    seed: int = 42
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    # Processes that share each batch (training.processes: README "Processes, Accelerate and GPUs"):
    # 1 trains here; N > 1 forks N (CPU: gloo; CUDA: one per GPU, NCCL), the same examples per step.
    processes: Annotated[int, Ge(1)] = 1
    progress: bool = True
