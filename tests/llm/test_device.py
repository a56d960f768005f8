"""The dtype rule: forced dtypes are kept; ``auto`` takes bf16 where the device has it natively, except
for text generation on a CPU (float32 there, by bench_dtype's measurement)."""

import pytest
import torch

from llm_seqrec.llm import device
from llm_seqrec.llm.device import choose_dtype, dtype_name

CPU = torch.device("cpu")


@pytest.mark.parametrize("native_bf16", [True, False])
def test_forced_dtypes_are_kept_for_every_use(monkeypatch, native_bf16):
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: native_bf16)
    for use in ("compute", "generation"):
        assert choose_dtype(CPU, "bfloat16", use) == torch.bfloat16
        assert choose_dtype(CPU, "float32", use) == torch.float32


def test_auto_on_a_cpu_with_native_bf16_computes_in_bf16_and_generates_in_float32(monkeypatch):
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: True)
    assert choose_dtype(CPU, "auto") == torch.bfloat16
    assert choose_dtype(CPU, "auto", "generation") == torch.float32


def test_auto_on_a_cpu_without_native_bf16_is_float32_for_every_use(monkeypatch):
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: False)
    assert choose_dtype(CPU, "auto") == choose_dtype(CPU, "auto", "generation") == torch.float32


def test_an_unknown_use_is_refused():
    with pytest.raises(ValueError, match="use must be 'compute' or 'generation'"):
        choose_dtype(CPU, "auto", "scoring")


def test_dtype_names_are_what_tables_record():
    assert dtype_name(torch.bfloat16) == "bfloat16" and dtype_name(torch.float32) == "float32"
