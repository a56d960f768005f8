"""RA-Rec's prompt layout: the token ids of both passes (see ``models.aligner``) and their batches.

    hybrid     [c_1 .. c_K]   [ID h_1] text(h_1)  [ID h_2] text(h_2) ... [ID h_n] text(h_n)  readout
    text-only  instruction    text(h_1) text(h_2) ... text(h_n)  readout

The instruction's, the readout's and every item line's token ids are fixed once per tokenizer and
catalogue (``prompt_layout``), so a batch is assembled from ids without tokenising again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from llm_seqrec.data.padding import length_mask, right_pad
from llm_seqrec.llm.prompts import text_ids
from llm_seqrec.llm.summarize import item_lines

PROMPT_KEYS = ("history_items", "item_tokens", "instruction", "readout")  # the prompt settings an artifact records


@dataclass(frozen=True)
class PromptLayout:
    """Token ids of both passes' fixed parts and of every item's text line."""

    instruction: tuple[int, ...]  # the text-only pass's instruction; the hybrid pass has len(instruction) prefix vectors
    readout: tuple[int, ...]
    item_text: Mapping[int, Sequence[int]]  # item_idx -> its line's token ids
    placeholder: int  # any token id: soft positions carry it until layer 0 replaces their state
    history_items: int  # the most recent items shown

    def batch(self, histories: Sequence[Sequence[int]], with_text: bool = True) -> dict[str, torch.Tensor]:
        """Padded tensors of a batch of histories (each cut to its last ``history_items`` items):
        ``ids, mask, last`` and the ID positions ``id_rows, id_cols, id_items`` of the hybrid pass, and
        with ``with_text`` ``text_ids, text_mask, text_last`` of the text-only pass."""
        hybrid, text, id_rows, id_cols, id_items = [], [], [], [], []
        K = len(self.instruction)
        for row, history in enumerate(histories):
            shown = [int(i) for i in history][-self.history_items :]
            if not shown:
                raise ValueError("every history needs at least one item")
            ids, plain = [self.placeholder] * K, list(self.instruction)
            for item in shown:
                id_rows.append(row)
                id_cols.append(len(ids))
                id_items.append(item)
                ids.append(self.placeholder)
                ids.extend(self.item_text[item])
                plain.extend(self.item_text[item])
            hybrid.append(ids + list(self.readout))
            text.append(plain + list(self.readout))
        out = dict(zip(("ids", "mask", "last"), _padded(hybrid, self.placeholder), strict=True))
        out.update(
            id_rows=torch.tensor(id_rows, dtype=torch.long),
            id_cols=torch.tensor(id_cols, dtype=torch.long),
            id_items=torch.tensor(id_items, dtype=torch.long),
        )
        if with_text:
            out.update(zip(("text_ids", "text_mask", "text_last"), _padded(text, self.placeholder), strict=True))
        return out


def prompt_layout(tokenizer, item_catalog: pd.DataFrame, prompt: Mapping) -> PromptLayout:
    """The layout of ``prompt`` (``PROMPT_KEYS``): instruction, readout and every item's line (its text
    cut to ``item_tokens``) as ``tokenizer``'s ids; the pad token is the placeholder."""
    texts = dict(zip(item_catalog["item_idx"], item_catalog["text"], strict=True))
    lines = item_lines(texts, tokenizer, prompt["item_tokens"])
    return PromptLayout(
        instruction=tuple(text_ids(tokenizer, prompt["instruction"])),
        readout=tuple(text_ids(tokenizer, prompt["readout"])),
        item_text={i: text_ids(tokenizer, line + "\n") for i, line in lines.items()},
        placeholder=int(tokenizer.pad_token_id),
        history_items=prompt["history_items"],
    )


def _padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ids ``[B, L]``, attention mask ``[B, L]`` (long) and each row's last real position ``[B]``."""
    ids, lengths = right_pad(rows, pad)
    return ids, length_mask(lengths, ids.shape[1]).long(), lengths - 1
