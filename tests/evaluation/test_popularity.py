import numpy as np
import pandas as pd
import torch

from llm_seqrec.data.schema import SPLITS
from llm_seqrec.evaluation.scoring import score_table
from llm_seqrec.models.popularity import Popularity, item_counts
from llm_seqrec.models.recommender import FullRanker, Queries


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


def test_popularity_gives_everyone_the_counts_of_the_queries_cutoff():
    model = Popularity(sequences(), n_items=6)
    assert isinstance(model, FullRanker) and model.backbone_dtype == ""
    for split in SPLITS:
        scores = model.score_all(Queries((1, 2), split, ((1,), (2,))))
        assert scores.shape == (2, 7) and (scores == torch.from_numpy(item_counts(sequences(), split, 6))).all()


def test_popularity_score_table_ranks_by_counts():
    frame = sequences()
    candidates = pd.DataFrame({"user_idx": [1, 2, 1, 2], "split": ["valid", "valid", "test", "test"],
                               "candidates": [[4, 2], [1, 6], [5, 2], [6, 3]]})
    table = score_table(Popularity(frame, n_items=6), frame, candidates).set_index(["user_idx", "split", "protocol"])
    assert table.loc[(2, "valid", "sampled"), "candidate_scores"].tolist() == [1.0, 0.0]  # item 1 once, item 6 never
    assert table.loc[(1, "valid", "full"), "top_items"].tolist()[:3] == [2, 1, 3]  # 3, then 1 and 1 (stable order)
    assert table.loc[(1, "test", "full"), "rank"] == 4.5  # item 5 unseen: ties with item 6 behind four seen items
