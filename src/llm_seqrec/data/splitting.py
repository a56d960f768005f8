"""From validated interactions to the tables of ``schema.py``: filter, sample, index, split.

Order of work (``build_interaction_tables``): drop users with too short a history; iterative k-core
(optional); a seeded sample of users (optional); contiguous ids and time order; the item catalog of
the items still referenced. ``leave_one_out`` then cuts every history into training items, the
validation target and the test target.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from llm_seqrec.data.schema import ITEM_COLUMNS
from llm_seqrec.data.validation import DataValidationError, QualityReport

MIN_HISTORY = 3  # leave-one-out needs at least one training item, a validation and a test target


def build_interaction_tables(
    interactions: pd.DataFrame,
    items: pd.DataFrame,
    report: QualityReport,
    *,
    path: Path,
    min_user_interactions: int,
    k_core: int | None,
    max_users: int | None,
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``interactions`` and ``item_catalog`` tables of ``schema.py``.

    ``interactions`` (user_id, item_id, timestamp, line) and ``items`` (item_id, title, text) come
    from ``validation``; ``path`` is the interactions file, named in messages and the report.
    """
    interactions = drop_short_histories(interactions, min_user_interactions, report, path)
    interactions = kcore_filter(interactions, k_core, min_user_interactions, report, path)
    interactions = sample_users(interactions, max_users, seed, report)
    return index_interactions(interactions, items, report, path)


def drop_short_histories(
    interactions: pd.DataFrame, min_interactions: int, report: QualityReport, path: Path
) -> pd.DataFrame:
    """Drop users with fewer than ``min_interactions`` interactions."""
    users, _ = pd.factorize(interactions["user_id"])
    short = np.bincount(users)[users] < min_interactions
    if short.all():
        raise DataValidationError(
            f"{path}: every user has fewer than data_processing.min_user_interactions={min_interactions} "
            f"interactions, so no user can be split into training, validation and test items"
        )
    report.record(
        "short_histories_dropped",
        path,
        f"dropped users with fewer than data_processing.min_user_interactions={min_interactions} interactions",
        interactions[short],
        count=len(np.unique(users[short])),
        interactions=int(short.sum()),
    )
    return interactions[~short]


def kcore_filter(
    interactions: pd.DataFrame, k: int | None, min_user_interactions: int, report: QualityReport, path: Path
) -> pd.DataFrame:
    """Iteratively drop items with fewer than ``k`` interactions and users with fewer than
    ``max(k, min_user_interactions)``, until none is left to drop. ``k`` None: no filter."""
    if k is None:
        return interactions
    users, _ = pd.factorize(interactions["user_id"])
    items, _ = pd.factorize(interactions["item_id"])
    user_min = max(k, min_user_interactions)
    keep = np.ones(len(interactions), dtype=bool)
    while True:
        user_counts = np.bincount(users[keep], minlength=users.max() + 1)
        item_counts = np.bincount(items[keep], minlength=items.max() + 1)
        still = keep & (user_counts[users] >= user_min) & (item_counts[items] >= k)
        if still.sum() == keep.sum():
            break
        keep = still
    if not keep.any():
        raise DataValidationError(
            f"{path}: dataset.k_core={k} removes every interaction ({len(interactions)} interactions, "
            f"{users.max() + 1} users, {items.max() + 1} items before the filter); lower dataset.k_core"
        )
    removed = ~keep
    report.record(
        "kcore_removed",
        path,
        f"dropped by the {k}-core filter (dataset.k_core): items with fewer than {k} interactions "
        f"and users with fewer than {user_min}, repeatedly",
        interactions[removed],
        users=len(np.setdiff1d(users[removed], users[keep])),
        items=len(np.setdiff1d(items[removed], items[keep])),
    )
    return interactions[keep]


def sample_users(interactions: pd.DataFrame, max_users: int | None, seed: int, report: QualityReport) -> pd.DataFrame:
    """Keep a seeded sample of ``max_users`` users (all of them when None or when fewer are left)."""
    users = sorted_ids(interactions["user_id"].unique())
    report.counts["users_before_sampling"] = len(users)
    if max_users is None or max_users >= len(users):
        return interactions
    chosen = np.random.default_rng(seed).choice(users, size=max_users, replace=False)
    return interactions[interactions["user_id"].isin(chosen)]


def index_interactions(
    interactions: pd.DataFrame, items: pd.DataFrame, report: QualityReport, path: Path
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Contiguous ids by sorted raw id (user_idx 1..U, item_idx 1..I; 0 is padding), each user's
    interactions in time order with ties in the order of the file, and the catalog of the items
    still referenced."""
    user_ids = sorted_ids(interactions["user_id"].unique())
    item_ids = sorted_ids(interactions["item_id"].unique())
    user_idx = pd.Categorical(interactions["user_id"], categories=user_ids).codes.astype(np.int64) + 1
    item_idx = pd.Categorical(interactions["item_id"], categories=item_ids).codes.astype(np.int64) + 1
    timestamp = interactions["timestamp"].to_numpy(dtype=np.float64)
    order = np.lexsort((interactions["line"].to_numpy(), timestamp, user_idx))
    ordered = interactions.iloc[order]

    tie = ordered.duplicated(["user_id", "timestamp"]).to_numpy()
    report.record(
        "timestamp_ties",
        path,
        "kept: interactions of one user with equal timestamps stay in the order of the file",
        ordered[tie],
        level=logging.INFO,  # ties are normal (MovieLens users rate in bursts) and nothing was changed
    )
    table = pd.DataFrame(
        {
            "user_idx": user_idx[order],
            "item_idx": item_idx[order],
            "timestamp": timestamp[order],
            "user_id": ordered["user_id"].to_numpy(),
            "item_id": ordered["item_id"].to_numpy(),
        }
    )
    catalog = items.set_index("item_id").loc[item_ids, ["title", "text"]].reset_index()
    catalog.insert(0, "item_idx", np.arange(1, len(item_ids) + 1, dtype=np.int64))
    report.counts.update(users=len(user_ids), items=len(item_ids), interactions=len(table))
    return table, catalog[ITEM_COLUMNS]


def leave_one_out(interactions: pd.DataFrame) -> pd.DataFrame:
    """``user_sequences``: per user, all items but the last two, then the validation and test targets.

    ``interactions`` is the table from ``index_interactions``: each user's rows in time order.
    """
    # The schema promises time order per user, not users in one block: gather them, keeping that order.
    by_user = np.argsort(interactions["user_idx"].to_numpy(), kind="stable")
    users = interactions["user_idx"].to_numpy()[by_user]
    items = interactions["item_idx"].to_numpy(dtype=np.int64)[by_user]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    short = (ends - starts) < MIN_HISTORY
    if short.any():
        raise ValueError(
            f"user_idx {users[starts[short][0]]} has fewer than {MIN_HISTORY} interactions; "
            "leave-one-out needs training items, a validation and a test target"
        )
    return pd.DataFrame(
        {
            "user_idx": users[starts].astype(np.int64),
            "user_id": interactions["user_id"].to_numpy()[by_user][starts],
            "train_items": [items[start : end - 2] for start, end in zip(starts, ends, strict=True)],
            "valid_target": items[ends - 2],
            "test_target": items[ends - 1],
        }
    )


def sorted_ids(ids: np.ndarray) -> np.ndarray:
    """Unique raw ids in a deterministic order: by number when every id is a plain integer, else as text."""
    ids = np.unique(np.asarray(ids, dtype=str)).astype(object)
    if pd.Series(ids, dtype=str).str.fullmatch(r"\d{1,18}").all():
        # np.unique sorted them as text, and the stable sort keeps that order among equal numbers ("7", "07")
        return ids[np.argsort(ids.astype(np.int64), kind="stable")]
    return ids
