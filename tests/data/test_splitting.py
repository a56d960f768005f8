"""Filtering, ordering, contiguous ids and leave-one-out: no target ever leaks into an input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llm_seqrec.data.schema import INTERACTION_COLUMNS, ITEM_COLUMNS, SEQUENCE_COLUMNS, split_input, split_inputs
from llm_seqrec.data.splitting import (
    build_interaction_tables,
    index_interactions,
    kcore_filter,
    leave_one_out,
    sample_users,
    sorted_ids,
)
from llm_seqrec.data.validation import DataValidationError, QualityReport

PATH = Path("interactions.csv")


def interactions_of(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    """Validated interactions (as ``validate_interactions`` returns them) in the given file order."""
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).astype({"timestamp": float})
    return frame.assign(line=np.arange(2, len(rows) + 2))


def items_of(item_ids) -> pd.DataFrame:
    ids = sorted(set(item_ids))
    return pd.DataFrame({"item_id": ids, "title": [f"t{i}" for i in ids], "text": [f"t{i} | x: y" for i in ids]})


def random_interactions(seed: int, n_users: int = 40, n_items: int = 30) -> pd.DataFrame:
    """Histories of 3..12 items with repeats and ties, in shuffled file order."""
    rng = np.random.default_rng(seed)
    rows = [
        (f"u{u}", str(rng.integers(n_items)), float(rng.integers(5)))
        for u in range(n_users)
        for _ in range(rng.integers(3, 13))
    ]
    return interactions_of([rows[i] for i in rng.permutation(len(rows))])


def build(inter: pd.DataFrame, **options) -> tuple[pd.DataFrame, pd.DataFrame, QualityReport]:
    report = QualityReport()
    settings = {"min_user_interactions": 3, "k_core": None, "max_users": None, "seed": 0, **options}
    table, catalog = build_interaction_tables(inter, items_of(inter["item_id"]), report, path=PATH, **settings)
    return table, catalog, report


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_inputs_hold_exactly_the_interactions_before_the_target(seed):
    inter = random_interactions(seed)
    table, _, _ = build(inter)
    sequences = leave_one_out(table)
    for split, held_out in (("valid", 2), ("test", 1)):
        inputs, targets = split_inputs(sequences, split)
        for user_idx, given, target in zip(sequences["user_idx"], inputs, targets, strict=True):
            history = table[table["user_idx"] == user_idx]
            position = len(history) - held_out
            assert given == history["item_idx"].tolist()[:position]  # nothing at or after the target
            assert target == history["item_idx"].iloc[position]
            assert (history["timestamp"].iloc[:position] <= history["timestamp"].iloc[position]).all()


def test_targets_are_the_last_two_interactions_in_time():
    inter = interactions_of(
        [("a", "1", 30), ("a", "2", 10), ("a", "3", 20), ("a", "4", 40), ("b", "1", 1), ("b", "2", 2), ("b", "3", 3)]
    )
    table, _, _ = build(inter)
    sequences = leave_one_out(table).set_index("user_id")
    assert sequences.loc["a", "train_items"].tolist() == [2, 3]
    assert (sequences.loc["a", "valid_target"], sequences.loc["a", "test_target"]) == (1, 4)
    assert split_input(sequences.loc["a", "train_items"], sequences.loc["a", "valid_target"], "test") == [2, 3, 1]
    assert list(leave_one_out(table).columns) == SEQUENCE_COLUMNS


def test_ties_keep_the_order_of_the_file():
    rows = [("a", "3", 5), ("a", "1", 5), ("a", "2", 1), ("a", "4", 5), ("b", "9", 0), ("b", "8", 0), ("b", "7", 0)]
    table, _, report = build(interactions_of(rows))
    assert table[table["user_id"] == "a"]["item_id"].tolist() == ["2", "3", "1", "4"]
    assert table[table["user_id"] == "b"]["item_id"].tolist() == ["9", "8", "7"]
    assert report.repairs["timestamp_ties"]["count"] == 4
    reversed_table, _, _ = build(interactions_of(rows[::-1]))
    assert reversed_table[reversed_table["user_id"] == "a"]["item_id"].tolist() == ["2", "4", "1", "3"]


def test_ids_are_contiguous_by_sorted_raw_id_and_unreferenced_items_leave_the_catalog():
    inter = interactions_of(
        [("10", "30", 1), ("10", "4", 2), ("10", "200", 3), ("9", "4", 1), ("9", "30", 2), ("9", "7", 3)]
    )
    items = items_of(["30", "4", "200", "7", "999"])  # 999: in the items file, never interacted with
    table, catalog = index_interactions(inter, items, QualityReport(), PATH)
    assert list(table.columns) == INTERACTION_COLUMNS and list(catalog.columns) == ITEM_COLUMNS
    assert dict(zip(table["user_id"], table["user_idx"])) == {"9": 1, "10": 2}  # by number, not as text
    assert catalog["item_id"].tolist() == ["4", "7", "30", "200"]
    assert catalog["item_idx"].tolist() == [1, 2, 3, 4]
    assert table["user_idx"].is_monotonic_increasing
    assert catalog.set_index("item_idx").loc[table["item_idx"], "item_id"].tolist() == table["item_id"].tolist()


def test_sorted_ids_of_text_and_mixed_ids():
    assert sorted_ids(np.array(["b", "a10", "a2", "a10"])).tolist() == ["a10", "a2", "b"]
    assert sorted_ids(np.array(["10", "9", "x"])).tolist() == ["10", "9", "x"]
    assert sorted_ids(np.array(["7", "07", "10"])).tolist() == ["07", "7", "10"]


def test_kcore_leaves_every_user_and_item_with_k_interactions():
    inter = random_interactions(3, n_users=80, n_items=40).drop_duplicates(["user_id", "item_id"])
    kept = kcore_filter(inter, 4, 3, QualityReport(), PATH)
    assert len(kept) and (kept.groupby("user_id").size() >= 4).all() and (kept.groupby("item_id").size() >= 4).all()


def test_kcore_iterates_until_stable():
    # Item "rare" has 2 interactions; only once it is gone do users "c" and "e" fall to 2 and go too.
    rows = [(u, i, t) for t, (u, i) in enumerate(
        [("a", "x"), ("a", "y"), ("a", "z"), ("b", "x"), ("b", "y"), ("b", "z"), ("d", "y"), ("d", "z"), ("d", "x"),
         ("c", "rare"), ("c", "x"), ("c", "y"), ("e", "rare"), ("e", "y"), ("e", "z")]
    )]
    report = QualityReport()
    kept = kcore_filter(interactions_of(rows), 3, 3, report, PATH)
    assert set(kept["user_id"]) == {"a", "b", "d"} and set(kept["item_id"]) == {"x", "y", "z"}
    entry = report.repairs["kcore_removed"]
    assert (entry["count"], entry["users"], entry["items"]) == (6, 2, 1)


def test_kcore_that_removes_everything_names_the_parameter():
    with pytest.raises(DataValidationError, match=r"dataset\.k_core=50"):
        kcore_filter(random_interactions(0), 50, 3, QualityReport(), PATH)


def test_kcore_none_is_off():
    inter = random_interactions(0)
    assert kcore_filter(inter, None, 3, QualityReport(), PATH) is inter


def test_short_histories_are_dropped_before_splitting():
    rows = [("a", "1", 1), ("a", "2", 2), ("b", "1", 1), ("b", "2", 2), ("b", "3", 3)]
    table, catalog, report = build(interactions_of(rows))
    assert set(table["user_id"]) == {"b"}
    assert report.repairs["short_histories_dropped"]["count"] == 1
    assert report.counts["users"] == 1 and report.counts["items"] == len(catalog) == 3


def test_user_sample_is_seeded_and_of_the_requested_size():
    inter = random_interactions(0, n_users=50)
    first = sample_users(inter, 10, 7, QualityReport())
    assert first["user_id"].nunique() == 10
    pd.testing.assert_frame_equal(first, sample_users(inter.iloc[::-1], 10, 7, QualityReport()).iloc[::-1])
    assert set(sample_users(inter, 10, 8, QualityReport())["user_id"]) != set(first["user_id"])
    assert sample_users(inter, 500, 7, QualityReport()) is inter


def test_leave_one_out_accepts_users_interleaved():
    table, _, _ = build(random_interactions(4))
    shuffled = table.sort_values("timestamp", kind="stable")  # users interleaved, each still in time order
    pd.testing.assert_frame_equal(leave_one_out(shuffled), leave_one_out(table))


def test_leave_one_out_refuses_histories_shorter_than_three():
    table = pd.DataFrame(
        {"user_idx": [1, 1], "item_idx": [1, 2], "timestamp": [0.0, 1.0], "user_id": ["a", "a"], "item_id": ["1", "2"]}
    )
    with pytest.raises(ValueError, match="fewer than 3"):
        leave_one_out(table)
