"""Device and dtype by what the machine has."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True where the CPU computes bf16 matmuls natively (AVX512-BF16 or AMX); else bf16 is emulated
    and several times slower than float32 (measured: 4x slower on an AVX-512 CPU without BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_device(requested: str = "auto") -> torch.device:
    if requested != "auto":
        if requested == "cuda" and not torch.cuda.is_available():
            raise ValueError("device=cuda was asked for but torch sees no CUDA device")
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def choose_dtype(device: torch.device, requested: str = "auto") -> torch.dtype:
    """``requested``, unless it is ``auto``: bf16 on a GPU that has it (float16 on an older one), float32
    on a CPU, even one with native bf16 (AVX512-BF16/AMX). Measured there on the default run
    (benchmarks/bench_dtype.py, README "Backbone dtype"): bf16 made training 1.04x, scoring 1.12x and
    generation 1.23x faster, while it changed 92 of 96 summaries and the rankings of the models trained in
    it; float32 gives the same results on every CPU. ``bfloat16`` can still be asked for."""
    if requested != "auto":
        return getattr(torch, requested)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    """``bfloat16``, ``float32``, ...: how a dtype is recorded in tables and logs."""
    return str(dtype).removeprefix("torch.")
