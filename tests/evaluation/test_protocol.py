import numpy as np
import pandas as pd
import pytest
import torch

from llm_seqrec.data.schema import SCORE_COLUMNS
from llm_seqrec.evaluation.protocol import (
    METRIC_COLUMNS,
    cold_item_metrics,
    cold_item_users,
    evaluation_user_sets,
    full_ranking_rows,
    llm_user_sample,
    metrics_table,
    sampled_rows,
    score_frame,
)

N_ITEMS = 6


def sequences(n_users: int = 2) -> pd.DataFrame:
    base = pd.DataFrame(
        {
            "user_idx": [1, 2],
            "user_id": ["a", "b"],
            "train_items": [[1, 2], [3]],
            "valid_target": [3, 4],
            "test_target": [5, 2],
        }
    )
    if n_users == 2:
        return base
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "user_idx": np.arange(1, n_users + 1),
            "user_id": [f"u{i}" for i in range(n_users)],
            "train_items": [list(rng.integers(1, N_ITEMS + 1, 3)) for _ in range(n_users)],
            "valid_target": rng.integers(1, N_ITEMS + 1, n_users),
            "test_target": rng.integers(1, N_ITEMS + 1, n_users),
        }
    )


def fixed_scores(inputs: list[list[int]]) -> torch.Tensor:
    # Item i scores i (item 6 best); column 0 (padding) scores highest of all, to prove it is ignored.
    return torch.tensor([[100.0, 1, 2, 3, 4, 5, 6]]).expand(len(inputs), -1)


def test_full_ranking_rows_rank_padding_and_top_items():
    seen = []

    def score_fn(inputs):
        seen.extend(inputs)
        return fixed_scores(inputs)

    rows = full_ranking_rows(score_fn, sequences(), "test", batch_size=1)
    assert list(rows.columns) == SCORE_COLUMNS
    assert seen == [[1, 2, 3], [3, 4]]  # test input = train items + valid target, never the test target
    # user 1: target 5 -> only item 6 above; user 2: target 2 -> items 6,5,4,3 above.
    assert rows["rank"].tolist() == [1.0, 4.0]
    assert rows["n_ranked"].tolist() == [N_ITEMS, N_ITEMS]
    assert list(rows["top_items"].iloc[0]) == [6, 5, 4, 3, 2, 1]
    assert set(rows["protocol"]) == {"full"} and set(rows["split"]) == {"test"}


def test_full_ranking_rows_exclude_seen():
    rows = full_ranking_rows(fixed_scores, sequences(), "test", exclude_seen=True)
    # user 1 saw 1,2,3 (all below target 5): rank unchanged, 3 fewer items ranked.
    # user 2 saw 3,4 (above target 2): both leave the ranking -> only 6,5 above.
    assert rows["rank"].tolist() == [1.0, 2.0]
    assert rows["n_ranked"].tolist() == [N_ITEMS - 3, N_ITEMS - 2]
    assert 3 not in list(rows["top_items"].iloc[1])


def test_exclude_seen_never_drops_a_repeated_target():
    frame = sequences()
    frame.loc[1, "test_target"] = 4  # user 2's test target is the validation item it already saw
    rows = full_ranking_rows(fixed_scores, frame, "test", exclude_seen=True)
    assert rows["rank"].iloc[1] == 2.0  # 6 and 5 above; 4 itself stays ranked
    assert rows["n_ranked"].iloc[1] == N_ITEMS - 1


def test_score_table_survives_parquet(tmp_path):
    table = pd.concat(
        [
            full_ranking_rows(fixed_scores, sequences(), "valid"),
            sampled_rows([[0.5, 0.1, 0.9], [1.0, 0.0]], candidates()),
        ],
        ignore_index=True,
    )
    table.to_parquet(tmp_path / "scores.parquet")
    back = pd.read_parquet(tmp_path / "scores.parquet")
    assert list(back.columns) == SCORE_COLUMNS
    assert list(back["top_items"].iloc[0]) == list(table["top_items"].iloc[0])
    assert list(back["candidate_scores"].iloc[2]) == [0.5, 0.1, 0.9]


def candidates() -> pd.DataFrame:
    return pd.DataFrame({"user_idx": [1, 2], "split": ["valid", "test"], "candidates": [[3, 5, 6], [2, 6]]})


def test_sampled_rows_ragged_and_ties():
    rows = sampled_rows([[0.5, 0.1, 0.9], [1.0, 1.0]], candidates())
    assert rows["rank"].tolist() == [1.0, 0.5]
    assert rows["n_ranked"].tolist() == [3, 2]
    assert rows["split"].tolist() == ["valid", "test"]
    with pytest.raises(ValueError, match="one score per candidate"):
        sampled_rows([[0.5, 0.1], [1.0, 1.0]], candidates())


def test_llm_user_sample_is_seeded_and_a_subset():
    frame = sequences(50)
    a, b = llm_user_sample(frame, 10, seed=3), llm_user_sample(frame, 10, seed=3)
    assert np.array_equal(a, b) and len(set(a)) == 10 and set(a) <= set(frame["user_idx"])
    assert not np.array_equal(a, llm_user_sample(frame, 10, seed=4))
    assert len(llm_user_sample(frame, None, seed=3)) == 50
    assert len(llm_user_sample(frame, 500, seed=3)) == 50
    assert set(evaluation_user_sets(frame, 10, 3)) == {"all", "sample10"}
    assert set(evaluation_user_sets(frame, 500, 3)) == {"all"}


def test_metrics_table_columns_and_the_sample_rule():
    frame = sequences(40)
    sets = evaluation_user_sets(frame, 8, seed=1)
    sample = sets["sample8"]
    rng = np.random.default_rng(0)
    random_scores = lambda inputs: torch.as_tensor(rng.random((len(inputs), N_ITEMS + 1)))  # noqa: E731
    everyone = pd.concat([full_ranking_rows(random_scores, frame, s) for s in ("valid", "test")], ignore_index=True)
    sample_candidates = pd.DataFrame(
        {"user_idx": np.repeat(sample, 2), "split": ["valid", "test"] * len(sample), "candidates": [[1, 2, 3]] * 16}
    )
    llm = sampled_rows(rng.random((16, 3)).tolist(), sample_candidates)
    metrics = metrics_table({"pop": everyone, "sasrec": everyone, "llm_zeroshot": llm}, "ml-1m", [1, 10], sets)

    assert list(metrics.columns) == METRIC_COLUMNS
    assert METRIC_COLUMNS[:6] == ["dataset", "model", "protocol", "split", "metric", "value"]
    assert set(metrics["dataset"]) == {"ml-1m"}
    assert set(metrics[metrics.protocol == "full"]["metric"]) == {"hr@1", "ndcg@1", "hr@10", "ndcg@10", "mrr"}
    assert set(metrics[metrics.protocol == "sampled"]["metric"]) == {"hr@1", "ndcg@5", "mrr", "auc"}
    # pop and sasrec: on all users and on the LLM sample; the LLM model only on its sample.
    for model in ("pop", "sasrec"):
        users = metrics[metrics.model == model].groupby("users")["n_users"].unique()
        assert {k: list(v) for k, v in users.items()} == {"all": [40], "sample8": [8]}
    assert set(metrics[metrics.model == "llm_zeroshot"]["users"]) == {"sample8"}
    # The sample rows are the metrics of exactly the sampled users.
    sub = everyone[(everyone.split == "test") & everyone.user_idx.isin(sample)]
    row = metrics[
        (metrics.model == "pop") & (metrics.users == "sample8") & (metrics.split == "test") & (metrics.metric == "mrr")
    ]
    assert row["value"].item() == pytest.approx(float((1 / (sub["rank"] + 1)).mean()))


def test_metrics_table_refuses_a_model_that_covers_no_user_set():
    frame = sequences(40)
    partial = full_ranking_rows(fixed_scores, frame.iloc[:5], "valid")
    with pytest.raises(ValueError, match="cover none"):
        metrics_table({"odd": partial}, "ml-1m", [10], evaluation_user_sets(frame, 8, seed=1))


def test_the_cold_item_slice_is_the_test_users_whose_target_has_few_training_interactions():
    frame = pd.DataFrame({
        "user_idx": [1, 2, 3, 4], "user_id": list("abcd"),
        "train_items": [[1, 2, 1], [1, 3], [2, 4], [1, 5]],
        "valid_target": [3, 4, 1, 2], "test_target": [1, 2, 6, 4],  # 1: 4 times in training, 2: twice, 6: never, 4: once
    })
    np.testing.assert_array_equal(cold_item_users(frame, "test"), [2, 3, 4])
    np.testing.assert_array_equal(cold_item_users(frame, "test", max_interactions=1), [3, 4])
    everyone = pd.concat([full_ranking_rows(fixed_scores, frame, s) for s in ("valid", "test")], ignore_index=True)
    partial = everyone[everyone["user_idx"] != 3]
    rows = cold_item_metrics({"sasrec": everyone, "llm": partial}, "ml-1m", [10], frame)
    assert set(rows["model"]) == {"sasrec"} and set(rows["users"]) == {"cold_items"}
    assert set(rows["split"]) == {"test"} and set(rows["protocol"]) == {"full"} and set(rows["n_users"]) == {3}
    test = everyone[(everyone.split == "test") & everyone.user_idx.isin([2, 3, 4])]
    mrr = rows.loc[rows.metric == "mrr", "value"].item()
    assert mrr == pytest.approx(float((1 / (test["rank"] + 1)).mean()))


def test_every_metric_row_carries_its_standard_error_over_users():
    users = np.arange(1, 5)
    table = score_frame(users, "test", "full", [0.0, 1.0, 3.0, 12.0], [100] * 4)
    metrics = metrics_table({"m": table}, "ml-1m", [1, 10], {"all": users}).set_index("metric")
    # HR@10 per user: 1, 1, 1, 0 -> mean 0.75, sd sqrt((3 * 0.25**2 + 0.75**2) / 3) = 0.5, se 0.5 / sqrt(4).
    assert metrics.loc["hr@10", "value"] == 0.75 and metrics.loc["hr@10", "std_error"] == pytest.approx(0.25)
    mrr = np.array([1, 1 / 2, 1 / 4, 1 / 13])
    hand = np.sqrt(((mrr - mrr.mean()) ** 2).sum() / 3) / 2
    assert metrics.loc["mrr", "std_error"] == pytest.approx(hand)
    one = metrics_table({"m": table.head(1)}, "ml-1m", [1], {"all": users[:1]})
    assert one["std_error"].isna().all()  # one user: no spread to estimate
