"""Evaluation candidates: the target first, then seeded, distinct, never-interacted items; and one
training example's negatives (``sample_negatives``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from llm_seqrec.data.negatives import check_enough_negatives, interacted_pairs, sample_eval_candidates, sample_negatives
from llm_seqrec.data.schema import CANDIDATE_COLUMNS, SPLITS


def random_sequences(seed: int, n_users: int = 200, n_items: int = 60) -> pd.DataFrame:
    """Histories of 3..40 items (repeats allowed), some users touching most of the catalogue."""
    rng = np.random.default_rng(seed)
    histories = [rng.integers(1, n_items + 1, size=rng.integers(3, 41)) for _ in range(n_users)]
    return pd.DataFrame(
        {
            "user_idx": np.arange(1, n_users + 1),
            "user_id": [str(u) for u in range(n_users)],
            "train_items": [h[:-2] for h in histories],
            "valid_target": [h[-2] for h in histories],
            "test_target": [h[-1] for h in histories],
        }
    )


def test_candidates_start_with_the_target_and_never_hold_an_interacted_item():
    sequences = random_sequences(0)
    candidates = sample_eval_candidates(sequences, n_items=60, n_negatives=20, seed=1)
    assert list(candidates.columns) == CANDIDATE_COLUMNS
    assert len(candidates) == 2 * len(sequences)
    by_user = sequences.set_index("user_idx")
    for user_idx, split, row in candidates.itertuples(index=False):
        row = np.asarray(row)
        user = by_user.loc[user_idx]
        history = {*user["train_items"], user["valid_target"], user["test_target"]}
        assert row[0] == user[f"{split}_target"]
        assert len(row) == 21 and len(set(row[1:])) == 20
        assert not set(row[1:]) & history  # not even the other split's target
        assert ((row >= 1) & (row <= 60)).all()


def test_rows_come_split_by_split_in_user_order():
    sequences = random_sequences(0, n_users=5)
    candidates = sample_eval_candidates(sequences, n_items=60, n_negatives=3, seed=0)
    assert candidates["split"].tolist() == [SPLITS[0]] * 5 + [SPLITS[1]] * 5
    assert candidates["user_idx"].tolist() == [1, 2, 3, 4, 5] * 2


def test_candidates_are_seeded():
    sequences = random_sequences(2)
    first = sample_eval_candidates(sequences, 60, 20, seed=5)
    again = sample_eval_candidates(sequences, 60, 20, seed=5)
    other = sample_eval_candidates(sequences, 60, 20, seed=6)
    assert all(np.array_equal(a, b) for a, b in zip(first["candidates"], again["candidates"], strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first["candidates"], other["candidates"], strict=True))


def test_a_user_with_exactly_n_free_items_gets_all_of_them():
    # User 1 has touched items 1..95 of 100: the only negatives are 96..100 (the direct-draw fallback).
    sequences = pd.DataFrame(
        {
            "user_idx": [1, 2],
            "user_id": ["a", "b"],
            "train_items": [np.arange(1, 94), np.array([1])],
            "valid_target": [94, 2],
            "test_target": [95, 3],
        }
    )
    candidates = sample_eval_candidates(sequences, n_items=100, n_negatives=5, seed=0)
    for row in candidates[candidates["user_idx"] == 1]["candidates"]:
        assert sorted(row[1:]) == [96, 97, 98, 99, 100]


def test_too_many_negatives_names_the_parameter():
    sequences = random_sequences(0, n_users=20, n_items=30)
    with pytest.raises(ValueError, match=r"evaluation\.n_negatives=29 is more than the \d+ items that user_idx"):
        sample_eval_candidates(sequences, n_items=30, n_negatives=29, seed=0)


def test_check_counts_distinct_items_only():
    users, items = np.array([1, 1, 1, 1]), np.array([1, 1, 2, 2])  # two distinct items of ten
    check_enough_negatives(users, items, n_items=10, n_negatives=8)
    with pytest.raises(ValueError, match="n_negatives=9"):
        check_enough_negatives(users, items, n_items=10, n_negatives=9)


def test_interacted_pairs_cover_training_items_and_both_targets():
    sequences = random_sequences(1, n_users=4)
    users, items = interacted_pairs(sequences)
    for row in sequences.itertuples():
        expected = sorted([*row.train_items, row.valid_target, row.test_target])
        assert sorted(items[users == row.user_idx]) == expected


def test_training_negatives_avoid_the_users_items():
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        drawn = sample_negatives(6, {1, 2, 3}, 2, generator)
        assert len(set(drawn)) == 2 and not set(drawn) & {1, 2, 3}
    with pytest.raises(ValueError, match="cannot draw"):
        sample_negatives(4, {1, 2, 3}, 2, generator)
