"""What ``training.fit`` needs from Hugging Face Accelerate: the ``Accelerator`` of a run, the module
it wraps, how a batch is shared between processes, and the launch of a run in several processes.

One process (``TrainingConfig.processes`` = 1, the default) runs in the caller's process, through an
``Accelerator`` that only places the model and batches on the device, autocasts and accumulates:
the numeric path of a plain loop. With N > 1, ``launch`` forks N processes (gloo on a CPU, NCCL on
GPUs); each builds the same batches from the same seeded generator, trains on its share of every
batch (``split_rows``, or the caller's ``shard``), and DDP all-reduces the gradients, so that a step
uses the same examples as one process's step. The main process validates, writes the checkpoints
and hands its result back to the caller's process.

Why fork, not Accelerate's ``notebook_launcher``/``debug_launcher``: ``fit`` takes closures (the
loss, the batches, the validator), which fork hands to the children as they are and spawn would have
to pickle; both launchers fork too, but ``notebook_launcher`` returns nothing (the trained weights
must come back) and runs the elastic agent, and ``debug_launcher`` is CPU-only; both take the fixed
port 29500, which two runs on one machine would share. ``launch`` does what they do underneath
(Accelerate's ``PrepareForLaunch`` and ``patch_environment`` around torch's ``start_processes``
with ``fork``) on a free port, and reads the main process's result back from a file.
Forking needs a parent that has not initialised CUDA (a CUDA context does not survive a fork).
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs, PrepareForLaunch, patch_environment
from torch import nn

logger = logging.getLogger(__name__)

# A process waits this long for the others at a collective (the main process validating, say).
COLLECTIVE_TIMEOUT = timedelta(hours=6)


class Objective(nn.Module):
    """The model and its loss as one module, so that the loss (which may call any method of the model,
    not only ``forward``) runs inside the wrapped module's ``forward``: where DDP prepares the gradient
    all-reduce and Accelerate autocasts. ``forward(None)`` (a process with no rows of a batch) is a zero
    loss over every trainable parameter, so that the process still takes part in the all-reduce."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Any], torch.Tensor]) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch):
        if batch is None:
            return sum((p * 0).sum() for p in self.model.parameters() if p.requires_grad)
        return self.loss_fn(self.model, batch)


def make_accelerator(device: torch.device, autocast_dtype: torch.dtype, grad_accumulation: int) -> Accelerator:
    """The run's ``Accelerator``: on ``device`` (each process on its own GPU when several), bf16 mixed
    precision when ``autocast_dtype`` is bfloat16, ``grad_accumulation`` batches per step; DDP looks for
    parameters a step leaves unused. Accelerate keeps one state per process: it is cleared first, so that
    each ``fit`` (and each forked process) sets it up anew."""
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return Accelerator(
        cpu=device.type == "cpu",
        mixed_precision="bf16" if autocast_dtype == torch.bfloat16 else "no",
        gradient_accumulation_steps=grad_accumulation,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True),
                         InitProcessGroupKwargs(timeout=COLLECTIVE_TIMEOUT)],
    )


def split_rows(batch, rank: int, world: int) -> tuple[Any, float]:
    """Process ``rank``'s share of ``batch`` and its weight in the batch's loss, for a loss that is the
    mean over the batch's rows: a list or tuple of examples, or a dict of tensors with one row per
    example, cut into ``world`` contiguous parts (sizes differing by at most one); the weight is the
    part's share of the rows. (None, 0.0) when the part is empty."""
    if isinstance(batch, list | tuple):
        n = len(batch)
    elif isinstance(batch, dict) and batch and all(isinstance(v, torch.Tensor) and v.dim() for v in batch.values()):
        sizes = {k: len(v) for k, v in batch.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"cannot split a batch whose tensors have different numbers of rows {sizes} between "
                             "processes: pass fit a `shard` that knows this batch, or train in one process")
        n = next(iter(sizes.values()))
    else:
        raise ValueError(f"cannot split a batch of type {type(batch).__name__} between processes: pass fit a "
                         "`shard`, or train in one process (training.processes: 1)")
    lo, hi = n * rank // world, n * (rank + 1) // world
    if lo == hi:
        return None, 0.0
    part = batch[lo:hi] if isinstance(batch, list | tuple) else {k: v[lo:hi] for k, v in batch.items()}
    return part, (hi - lo) / n


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(run: Callable[[], dict], processes: int, device: torch.device, name: str) -> dict:
    """``run()`` in ``processes`` forked processes (the process group set up by the ``Accelerator`` that
    ``run`` makes); returns the main process's result (a dict of tensors and plain values)."""
    from torch.multiprocessing import start_processes

    if device.type == "cuda":
        if torch.cuda.is_initialized():
            raise RuntimeError(f"{name}: training.processes={processes} forks one process per GPU, but this process "
                               "has already initialised CUDA (a model or backbone on the GPU): load it on the CPU "
                               "(backbone.device: cpu) and let training place it, or train in one process")
        if processes > torch.cuda.device_count():
            raise ValueError(f"{name}: training.processes={processes} but torch sees {torch.cuda.device_count()} GPUs")
    elif device.type != "cpu":
        raise ValueError(f"{name}: training.processes > 1 runs on CPUs or CUDA GPUs, not on {device.type}")
    backend = "nccl" if device.type == "cuda" else "gloo"
    logger.info("%s: training in %d processes (%s, fork), batches split between them", name, processes, backend)
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.pt"
        env = {"nproc": processes, "node_rank": 0, "world_size": processes, "local_world_size": processes,
               "master_addr": "127.0.0.1", "master_port": free_port()}
        if device.type == "cpu":
            env["gloo_socket_ifname"] = "lo"
        distributed = "MULTI_GPU" if device.type == "cuda" else "MULTI_CPU"
        with patch_environment(**env):
            start_processes(PrepareForLaunch(_child, distributed_type=distributed), args=(run, result, name),
                            nprocs=processes, start_method="fork")
        return torch.load(result, weights_only=True)


def _child(run: Callable[[], dict], result: Path, name: str) -> None:
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    logger.info("%s: process %d of %d (pid %d)", name, rank + 1, world, os.getpid())
    if rank:  # the main process logs the epochs
        logging.getLogger("llm_seqrec").setLevel(logging.WARNING)
    out = run()
    if rank == 0:
        torch.save(out, result)
