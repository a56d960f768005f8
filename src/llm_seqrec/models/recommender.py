"""The one recommender interface every model here speaks.

A recommender reads ``Queries`` — users at one cutoff, each with the items it may see (oldest first,
never the target or later) and, for models that read text, the user's summary there — and scores items:

- a **full ranker** (SASRec, RA-Rec, Laser/fusion, popularity) gives ``score_all(queries)``: a score
  for every item, ``[n_users, n_items + 1]`` with column = ``item_idx`` (column 0 is padding);
- a **candidate scorer** (the LoRA recommenders, the zero-shot LLM) gives
  ``score_candidates(queries, candidates)``: ``[n_users, n_candidates]``, aligned with each user's
  candidate list. A full ranker scores candidates by indexing its full scores (``candidate_scores``).

``backbone_dtype`` names the dtype a frozen LLM scores in, "" for a model without one. ``fingerprint()``
names everything the model's scores depend on besides the query (class, trained weights, prompt and
scoring settings, the texts it reads, a frozen backbone by name and dtype; ``data.fingerprint.
scorer_fingerprint``): the score cache's key, so it must change whenever a score could. Training goes
through ``training.fit``, which calls the loss a model (or its procedure) gives for a batch.
``evaluation.scoring`` turns any recommender into a ``<model>_scores`` table and serves every
trainer's validation metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch


@dataclass(frozen=True)
class Queries:
    """Users at one cutoff (``train``, ``valid`` or ``test``), in a fixed order."""

    users: tuple[int, ...]  # user_idx
    cutoff: str
    histories: tuple[tuple[int, ...], ...]  # each user's visible items, oldest first
    summaries: tuple[str | None, ...] | None = None  # each user's summary at the cutoff; None = no text

    def __post_init__(self) -> None:
        if len(self.histories) != len(self.users) or (self.summaries is not None and len(self.summaries) != len(self.users)):
            raise ValueError("Queries needs one history (and one summary, where given) per user")

    def __len__(self) -> int:
        return len(self.users)

    def take(self, rows: Sequence[int]) -> Queries:
        """The queries of ``rows`` (positions), in that order."""
        return Queries(
            tuple(self.users[r] for r in rows),
            self.cutoff,
            tuple(self.histories[r] for r in rows),
            tuple(self.summaries[r] for r in rows) if self.summaries is not None else None,
        )

    def summary(self, row: int) -> str | None:
        return self.summaries[row] if self.summaries is not None else None


@runtime_checkable
class FullRanker(Protocol):
    backbone_dtype: str

    def score_all(self, queries: Queries) -> torch.Tensor:
        """Scores ``[len(queries), n_items + 1]`` of every item for every user (column = item_idx)."""

    def fingerprint(self) -> str:
        """The scorer's identity in the score cache (see the module's docstring)."""


@runtime_checkable
class CandidateScorer(Protocol):
    backbone_dtype: str

    def score_candidates(self, queries: Queries, candidates: Sequence[Sequence[int]]) -> Sequence[Sequence[float]]:
        """Scores ``[len(queries), n_candidates]`` of each user's candidates, in their order."""

    def fingerprint(self) -> str:
        """The scorer's identity in the score cache (see the module's docstring)."""


Recommender = FullRanker | CandidateScorer


def candidate_scores(full: torch.Tensor, candidates: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """Each row's candidates' scores (float64), read from full-ranking scores ``[n, n_items + 1]``."""
    if len(candidates) != len(full):
        raise ValueError(f"{len(candidates)} candidate lists for {len(full)} score rows")
    # torch.tensor copies: candidate arrays read from parquet are read-only.
    return [full[r, torch.tensor(np.asarray(c, dtype=np.int64))].double().numpy() for r, c in enumerate(candidates)]
