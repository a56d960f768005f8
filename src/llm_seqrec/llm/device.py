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
    if requested != "auto":
        return getattr(torch, requested)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    """``bfloat16``, ``float32``, ...: how a dtype is recorded in tables and logs."""
    return str(dtype).removeprefix("torch.")
