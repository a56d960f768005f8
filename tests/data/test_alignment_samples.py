"""RA-Rec's tailored samples: the overlap filter, even bucket proportions, the budget (pure pandas)."""

import numpy as np
import pandas as pd
import pytest

from llm_seqrec.data.alignment_samples import (
    SAMPLE_COLUMNS,
    build_alignment_samples,
    even_quotas,
    item_words,
    quantile_buckets,
)


def catalog(titles: list[str]) -> pd.DataFrame:
    n = len(titles)
    return pd.DataFrame({"item_idx": np.arange(1, n + 1, dtype=np.int64), "item_id": [f"i{i}" for i in range(1, n + 1)],
                         "title": titles, "text": titles})


def sequences(histories: list[list[int]]) -> pd.DataFrame:
    return pd.DataFrame({
        "user_idx": np.arange(1, len(histories) + 1, dtype=np.int64),
        "user_id": [f"u{u}" for u in range(1, len(histories) + 1)],
        "train_items": histories,
        "valid_target": [1] * len(histories),
        "test_target": [1] * len(histories),
    })


def test_overlap_filter_keeps_exactly_the_targets_that_share_a_distinctive_word():
    # "the" is in every title, so it is no overlap; "kit", "lab" and "glass" are.
    items = catalog(["The solder kit", "The lab kit", "The glass beaker", "The lab glass", "The magnet"])
    users = sequences([[1, 2, 3, 4], [5, 1, 3], [2, 5, 4]])
    samples = build_alignment_samples(users, items, n_samples=100, history_items=2, length_buckets=1,
                                      popularity_buckets=1, max_word_df=0.5)
    kept = set(zip(samples["user_idx"], samples["position"], strict=True))
    # user 1: 2 after [1] (kit), 3 after [1, 2] (none), 4 after [2, 3] (lab, glass)
    # user 2: 1 after [5] (none), 3 after [5, 1] (none); user 3: 5 after [2] (none), 4 after [2, 5] (lab)
    assert kept == {(1, 1), (1, 3), (3, 2)}
    assert list(samples.columns) == SAMPLE_COLUMNS
    assert samples.loc[samples["user_idx"] == 1, "history"].map(list).tolist() == [[1], [2, 3]]
    assert item_words({1: "The solder kit", 2: "the lab"}, max_word_df=0.5) == {1: {"solder", "kit"}, 2: {"lab"}}


def test_samples_are_even_over_length_and_popularity_buckets():
    rng = np.random.default_rng(0)
    n_items = 200
    popularity = 1.0 / np.arange(1, n_items + 1)  # Zipf: a few items dominate the interactions
    histories = [rng.choice(np.arange(1, n_items + 1), size=int(length), p=popularity / popularity.sum()).tolist()
                 for length in rng.integers(3, 80, size=400)]
    items = catalog([f"common item {i}" for i in range(1, n_items + 1)])  # every target shares "common"
    samples = build_alignment_samples(sequences(histories), items, n_samples=160, history_items=5,
                                      length_buckets=4, popularity_buckets=4, max_word_df=1.0, seed=1)
    assert len(samples) == 160
    assert samples.groupby("length_bucket").size().tolist() == [40] * 4
    assert samples.groupby("popularity_bucket").size().tolist() == [40] * 4
    assert samples.groupby(["length_bucket", "popularity_bucket"]).size().eq(10).all()
    # The buckets are those of the user's history length and the target's training popularity.
    lengths = np.array([len(h) for h in histories])
    assert (samples["length_bucket"].to_numpy() == quantile_buckets(lengths, 4)[samples["user_idx"] - 1]).all()
    counts = np.bincount(np.concatenate(histories), minlength=n_items + 1)[1:]
    assert (samples["popularity_bucket"].to_numpy() == quantile_buckets(counts, 4)[samples["target"] - 1]).all()
    # Uniform sampling over candidate positions would be dominated by long histories and popular items.
    natural_long = lengths[quantile_buckets(lengths, 4) == 3].sum() / lengths.sum()
    assert natural_long > 0.4
    # Targets come from the training items, the history is the window just before them.
    for user, position, history, target in samples[["user_idx", "position", "history", "target"]].itertuples(index=False):
        train = histories[user - 1]
        assert train[position] == target and list(history) == train[max(0, position - 5) : position]


def test_a_short_cell_gives_what_it_has_and_the_rest_is_spread_evenly():
    assert even_quotas(np.array([2, 100, 100, 0]), 50, np.random.default_rng(0)).tolist() == [2, 24, 24, 0]
    assert even_quotas(np.array([3, 5]), 100, np.random.default_rng(0)).tolist() == [3, 5]
    quotas = even_quotas(np.array([10, 10, 10]), 7, np.random.default_rng(0))
    assert quotas.sum() == 7 and sorted(quotas.tolist()) == [2, 2, 3]


def test_users_take_turns_within_a_cell():
    # One user with 60 positions, nine with one each: a budget of 10 takes every user once.
    items = catalog([f"shared {i}" for i in range(1, 62)])
    histories = [list(range(1, 62))] + [[1, 2]] * 9
    samples = build_alignment_samples(sequences(histories), items, n_samples=10, history_items=3,
                                      length_buckets=1, popularity_buckets=1, max_word_df=1.0)
    assert sorted(samples["user_idx"].tolist()) == list(range(1, 11))


@pytest.mark.parametrize("n_buckets", [1, 3, 4])
def test_quantile_buckets_keep_ties_together_and_number_buckets_without_gaps(n_buckets):
    # Mostly ones and twos, as item popularity in a small sample: an interpolated quantile edge
    # between 1 and 2 leaves an empty bucket, which must not leave a gap in the numbering.
    values = np.array([0] * 3 + [1] * 60 + [2] * 30 + list(range(3, 36)))
    buckets = quantile_buckets(values, n_buckets)
    assert set(buckets.tolist()) == set(range(buckets.max() + 1)) and buckets.max() <= n_buckets - 1
    assert len(set(buckets[values == 1])) == 1 and (np.diff(buckets[np.argsort(values, kind="stable")]) >= 0).all()
