"""The dtype rule: forced dtypes are kept; ``auto`` is float32 on every CPU, with native bf16 or without
(bench_dtype measured bf16 there at most 1.23x faster per use, with other results)."""

import pytest
import torch

from llm_seqrec.llm import device
from llm_seqrec.llm.device import choose_dtype, dtype_name

CPU = torch.device("cpu")


@pytest.mark.parametrize("native_bf16", [True, False])
def test_auto_is_float32_on_a_cpu_and_forced_dtypes_are_kept(monkeypatch, native_bf16):
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: native_bf16)
    assert choose_dtype(CPU, "auto") == torch.float32
    assert choose_dtype(CPU, "bfloat16") == torch.bfloat16
    assert choose_dtype(CPU, "float32") == torch.float32


def test_dtype_names_are_what_tables_record():
    assert dtype_name(torch.bfloat16) == "bfloat16" and dtype_name(torch.float32) == "float32"
