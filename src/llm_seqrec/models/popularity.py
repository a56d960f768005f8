"""Popularity: an item's score is how often it was interacted with before the split's targets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from llm_seqrec.data.fingerprint import scorer_fingerprint
from llm_seqrec.data.schema import SPLITS, split_inputs
from llm_seqrec.models.recommender import Queries


def item_counts(user_sequences: pd.DataFrame, split: str, n_items: int) -> np.ndarray:
    """Interaction counts ``[n_items + 1]`` (index = item_idx, 0 = padding, always 0) over every user's
    input for ``split``: train items for 'valid'; train items and validation targets for 'test'.
    No split's target, and nothing after it, is ever counted."""
    inputs, _ = split_inputs(user_sequences, split)
    flat = np.fromiter((item for items in inputs for item in items), dtype=np.int64)
    counts = np.bincount(flat, minlength=n_items + 1).astype(np.float64)
    if len(counts) > n_items + 1:
        raise ValueError(f"user_sequences holds item_idx {len(counts) - 1}, beyond n_items={n_items}")
    counts[0] = 0.0
    return counts


class Popularity:
    """A full ranker that gives every user at a cutoff the same scores: ``item_counts`` of that cutoff."""

    backbone_dtype = ""  # no LLM

    def __init__(self, user_sequences: pd.DataFrame, n_items: int) -> None:
        self.counts = {split: torch.from_numpy(item_counts(user_sequences, split, n_items)) for split in SPLITS}

    def score_all(self, queries: Queries) -> torch.Tensor:
        if queries.cutoff not in self.counts:
            raise ValueError(f"popularity counts exist for the cutoffs {SPLITS}, not {queries.cutoff!r}")
        return self.counts[queries.cutoff].expand(len(queries), -1)

    def fingerprint(self) -> str:
        """Its counts are all it scores with."""
        return scorer_fingerprint("Popularity", counts=self.counts)
