"""Negative items: the one sampler module, for evaluation and for training.

``sample_eval_candidates``: seeded candidate lists for the sampled protocol, the target then items
the user never touched. Negatives are drawn by rejection on the whole (rows x draws) matrix at once:
draw uniformly from all items, reject the user's items and repeats within a row, keep the first
survivors, and redraw only for rows still short. A row whose user has touched most of the catalogue
could need many rounds; after ``MAX_ROUNDS`` such rows draw directly from their allowed items instead.

``sample_negatives``: one training example's negatives from a ``torch.Generator`` (the LoRA
recommenders' and Laser's training draws, so they follow the training loop's per-epoch seeding).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from llm_seqrec.data.schema import CANDIDATE_COLUMNS, SPLITS

MAX_ROUNDS = 20


def sample_eval_candidates(user_sequences: pd.DataFrame, n_items: int, n_negatives: int, seed: int) -> pd.DataFrame:
    """``eval_candidates``: for every split and user, the target then ``n_negatives`` distinct items
    (from 1..``n_items``) that the user never interacted with, training items and both targets included.

    Rows come split by split ('valid', then 'test'), users in ``user_sequences`` order.
    """
    users, items = interacted_pairs(user_sequences)
    check_enough_negatives(users, items, n_items, n_negatives)
    user_idx = user_sequences["user_idx"].to_numpy(dtype=np.int64)
    row_users = np.tile(user_idx, len(SPLITS))
    targets = np.concatenate([user_sequences[f"{split}_target"].to_numpy(dtype=np.int64) for split in SPLITS])
    seen = _sorted_unique(_pair_keys(users, items, n_items))
    negatives = _sample_negatives(row_users, seen, n_items, n_negatives, np.random.default_rng(seed))
    return pd.DataFrame(
        {
            "user_idx": row_users,
            "split": np.repeat(SPLITS, len(user_idx)),
            "candidates": list(np.column_stack([targets, negatives])),
        }
    )[CANDIDATE_COLUMNS]


def sample_negatives(n_items: int, excluded: set[int], k: int, generator: torch.Generator) -> tuple[int, ...]:
    """``k`` distinct items in 1..n_items outside ``excluded`` (the user's own input and target items),
    by rejection from rounds of ``2 k`` uniform draws of ``generator``."""
    if n_items - len(excluded) < k:
        raise ValueError(f"cannot draw {k} negatives from {n_items} items, {len(excluded)} of which are the user's")
    chosen: list[int] = []
    while len(chosen) < k:
        for item in torch.randint(1, n_items + 1, (2 * k,), generator=generator).tolist():
            if item not in excluded and item not in chosen and len(chosen) < k:
                chosen.append(item)
    return tuple(chosen)


def interacted_pairs(user_sequences: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Every (user_idx, item_idx) of every history, training items and both targets."""
    user_idx = user_sequences["user_idx"].to_numpy(dtype=np.int64)
    train = user_sequences["train_items"]
    users = np.concatenate([np.repeat(user_idx, train.map(len).to_numpy()), user_idx, user_idx])
    items = np.concatenate(
        [
            np.concatenate([np.asarray(t, dtype=np.int64) for t in train]),
            user_sequences["valid_target"].to_numpy(dtype=np.int64),
            user_sequences["test_target"].to_numpy(dtype=np.int64),
        ]
    )
    return users, items


def check_enough_negatives(users: np.ndarray, items: np.ndarray, n_items: int, n_negatives: int) -> None:
    """Refuse ``n_negatives`` above the number of items some user has not interacted with."""
    keys = _sorted_unique(_pair_keys(np.asarray(users), np.asarray(items), n_items))
    distinct_users, distinct_items = np.unique(keys // (n_items + 1), return_counts=True)
    free = n_items - distinct_items
    worst = int(np.argmin(free))
    if free[worst] < n_negatives:
        raise ValueError(
            f"evaluation.n_negatives={n_negatives} is more than the {free[worst]} items that user_idx "
            f"{distinct_users[worst]} has not interacted with ({n_items} items in the catalog); "
            "lower evaluation.n_negatives"
        )


def _pair_keys(users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    return users.astype(np.int64) * (n_items + 1) + items.astype(np.int64)


def _sample_negatives(
    row_users: np.ndarray, seen: np.ndarray, n_items: int, n: int, rng: np.random.Generator
) -> np.ndarray:
    """``n`` distinct unseen items per row; ``seen`` holds the sorted keys of interacted pairs."""
    out = np.zeros((len(row_users), n), dtype=np.int64)
    filled = np.zeros(len(row_users), dtype=np.int64)
    pending = np.arange(len(row_users))
    for _ in range(MAX_ROUNDS):
        if pending.size == 0:
            return out
        draws = rng.integers(1, n_items + 1, size=(pending.size, 2 * n))
        fresh = ~_is_seen(row_users[pending, None], draws, seen, n_items)
        # A draw repeating an item already kept (or drawn earlier in this round) is not fresh either.
        fresh &= ~_repeats_in_row(np.concatenate([out[pending], draws], axis=1))[:, n:]
        rank = np.cumsum(fresh, axis=1)
        need = (n - filled[pending])[:, None]
        rows, cols = np.nonzero(fresh & (rank <= need))
        out[pending[rows], filled[pending[rows]] + rank[rows, cols] - 1] = draws[rows, cols]
        filled[pending] += np.minimum(rank[:, -1], need[:, 0])
        pending = pending[filled[pending] < n]
    for row in pending:
        allowed = np.setdiff1d(np.arange(1, n_items + 1), seen[seen // (n_items + 1) == row_users[row]] % (n_items + 1))
        out[row] = rng.choice(allowed, size=n, replace=False)
    return out


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    # np.unique hashes first since numpy 2.3, many times slower than sorting on a million keys.
    ordered = np.sort(values)
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]]


def _is_seen(users: np.ndarray, items: np.ndarray, seen: np.ndarray, n_items: int) -> np.ndarray:
    keys = _pair_keys(users, items, n_items)
    position = np.minimum(np.searchsorted(seen, keys), len(seen) - 1)
    return seen[position] == keys


def _repeats_in_row(matrix: np.ndarray) -> np.ndarray:
    """True where a value already occurs earlier in its row (padding zeros never match a draw)."""
    order = np.argsort(matrix, axis=1, kind="stable")
    ordered = np.take_along_axis(matrix, order, axis=1)
    repeat_sorted = np.zeros_like(matrix, dtype=bool)
    repeat_sorted[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    repeats = np.empty_like(repeat_sorted)
    np.put_along_axis(repeats, order, repeat_sorted, axis=1)
    return repeats
