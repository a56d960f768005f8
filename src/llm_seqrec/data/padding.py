"""Id sequences into padded tensors: the one left padder (ID models read the most recent items) and
the one right padder (LLM prompts and continuations). Padding is ``schema.PAD``."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llm_seqrec.data.schema import PAD


def left_pad(sequences: Sequence[Sequence[int]], max_len: int) -> torch.Tensor:
    """The last ``max_len`` items of each sequence, left-padded to the longest kept length ``[N, L]``."""
    length = max(1, min(max_len, max((len(s) for s in sequences), default=1)))
    out = torch.full((len(sequences), length), PAD, dtype=torch.long)
    for row, seq in enumerate(sequences):
        kept = list(seq)[-length:]
        if kept:
            out[row, length - len(kept):] = torch.as_tensor(kept, dtype=torch.long)
    return out


def right_pad(
    rows: Sequence[Sequence[int]], pad: int = PAD, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids ``[N, L]`` (L the longest row, at least 1) and each row's length ``[N]``."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    out = torch.full((len(rows), max(1, int(lengths.max()) if len(rows) else 1)), pad, dtype=torch.long)
    for r, ids in enumerate(rows):
        if len(ids):
            out[r, : len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
    return out.to(device), lengths.to(device)


def length_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """``[N, width]`` True at each row's first ``lengths[r]`` positions (a right-padded batch's real tokens)."""
    return torch.arange(width, device=lengths.device) < lengths.unsqueeze(1)
