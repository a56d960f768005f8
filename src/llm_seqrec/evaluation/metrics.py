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


def per_user_metrics(ranks: np.ndarray, ks: Sequence[int], protocol: str, n_ranked: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Each user's metric values (float64 arrays in ``ranks``' order). Full: HR@K, NDCG@K for every K,
    MRR. Sampled: HR@1, NDCG@5, AUC, MRR."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        raise ValueError("no ranks to compute metrics from")
    gains = 1.0 / np.log2(ranks + 2.0)
    out: dict[str, np.ndarray] = {}
    if protocol == "full":
        for k in ks:
            hit = ranks < k
            out[f"hr@{k}"] = hit.astype(np.float64)
            out[f"ndcg@{k}"] = hit * gains
    elif protocol == "sampled":
        out["hr@1"] = (ranks < 1).astype(np.float64)
        out["ndcg@5"] = (ranks < 5) * gains
        if n_ranked is None:
            raise ValueError("the sampled protocol needs n_ranked (candidates per user) for AUC")
        out["auc"] = 1.0 - ranks / (np.asarray(n_ranked, dtype=np.float64) - 1)
    else:
        raise ValueError(f"protocol must be 'full' or 'sampled', got {protocol!r}")
    out["mrr"] = 1.0 / (ranks + 1.0)
    return out


def metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int], protocol: str, n_ranked: np.ndarray | None = None) -> dict[str, float]:
    """Mean metrics over users (``per_user_metrics``)."""
    return {name: float(values.mean()) for name, values in per_user_metrics(ranks, ks, protocol, n_ranked).items()}


def standard_error(values: np.ndarray) -> float:
    """The standard error of ``values``' mean: sample standard deviation / sqrt(n); NaN for one value."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
