import numpy as np
import pandas as pd

from llm_seqrec.models.popularity import item_counts


def sequences() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_idx": [1, 2],
            "user_id": ["a", "b"],
            "train_items": [[1, 2, 2], [2, 3]],
            "valid_target": [4, 1],
            "test_target": [5, 6],
        }
    )


def test_valid_counts_train_items_only():
    counts = item_counts(sequences(), "valid", n_items=6)
    assert counts.tolist() == [0, 1, 3, 1, 0, 0, 0]


def test_test_counts_add_valid_targets_but_never_test_targets():
    counts = item_counts(sequences(), "test", n_items=6)
    assert counts.tolist() == [0, 2, 3, 1, 1, 0, 0]
    assert counts[5] == 0 and counts[6] == 0  # test targets


def test_target_never_counted_even_when_it_is_popular_later():
    frame = sequences()
    frame.loc[0, "valid_target"] = 3  # user 1's validation target is item 3
    valid = item_counts(frame, "valid", n_items=6)
    test = item_counts(frame, "test", n_items=6)
    assert valid[3] == 1  # only user 2's training interaction
    assert test[3] == 2
    assert np.all(valid <= test)
