"""Ranks and ranking metrics, vectorised.

Every model reports, per user, the 0-based rank of the target among the ranked items; ties count
half (the expected rank under a random tie-break), so a model that scores everything equal gets the
rank of a random guess, not a perfect one. All metrics are functions of that rank:
HR@K = [rank < K], NDCG@K = [rank < K] / log2(rank + 2), MRR = 1 / (rank + 1), and for the sampled
protocol AUC = 1 - rank / n_negatives (the share of negatives scored below the target).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def target_ranks(scores: torch.Tensor, target_index: torch.Tensor) -> torch.Tensor:
    """Rank of ``scores[b, target_index[b]]`` within row b: #higher + #tied others / 2 (float)."""
    target = scores.gather(1, target_index.view(-1, 1))
    higher = (scores > target).sum(1)
    tied = (scores == target).sum(1) - 1
    return higher.to(torch.float64) + tied.to(torch.float64) / 2


def exclude_items(scores: torch.Tensor, excluded: Sequence[Sequence[int]], keep: torch.Tensor) -> torch.Tensor:
    """Set excluded item columns to -inf per row, except ``keep[b]`` (the target never leaves)."""
    rows = [b for b, items in enumerate(excluded) for _ in items]
    cols = [int(i) for items in excluded for i in items]
    if rows:
        target_scores = scores.gather(1, keep.view(-1, 1))
        scores[torch.tensor(rows), torch.tensor(cols)] = float("-inf")
        scores.scatter_(1, keep.view(-1, 1), target_scores)
    return scores


def metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int], protocol: str, n_ranked: np.ndarray | None = None) -> dict[str, float]:
    """Mean metrics over users. Full: HR@K, NDCG@K for every K, MRR. Sampled: HR@1, NDCG@5, MRR, AUC."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        raise ValueError("no ranks to compute metrics from")
    gains = 1.0 / np.log2(ranks + 2.0)
    out: dict[str, float] = {}
    if protocol == "full":
        for k in ks:
            hit = ranks < k
            out[f"hr@{k}"] = float(hit.mean())
            out[f"ndcg@{k}"] = float((hit * gains).mean())
    elif protocol == "sampled":
        out["hr@1"] = float((ranks < 1).mean())
        out["ndcg@5"] = float(((ranks < 5) * gains).mean())
        if n_ranked is None:
            raise ValueError("the sampled protocol needs n_ranked (candidates per user) for AUC")
        out["auc"] = float((1.0 - ranks / (np.asarray(n_ranked, dtype=np.float64) - 1)).mean())
    else:
        raise ValueError(f"protocol must be 'full' or 'sampled', got {protocol!r}")
    out["mrr"] = float((1.0 / (ranks + 1.0)).mean())
    return out
