"""SASRec's training procedure without Kedro: the batches, the validation sample, the metric it stops on,
the dropout ``auto`` resolves to."""

import logging
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import AMAZON

from llm_seqrec.data.preparation import prepare_interactions
from llm_seqrec.data.splitting import leave_one_out
from llm_seqrec.evaluation.scoring import validation_metric
from llm_seqrec.training import TrainingConfig
from llm_seqrec.training.id_model import (
    SASRecSettings,
    SASRecTextSettings,
    auto_dropout,
    eval_user_sample,
    length_bucketed_batches,
    train_sasrec,
)

N_ITEMS = 20


def successor_users(n: int, seed: int = 0) -> pd.DataFrame:
    """Users whose items follow i -> i + 1 (wrapping), of varied lengths; the targets continue the run."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(1, n + 1):
        start, length = int(rng.integers(0, N_ITEMS)), int(rng.integers(3, 10))
        items = [(start + k) % N_ITEMS + 1 for k in range(length + 2)]
        rows.append((user, str(user), items[:-2], items[-2], items[-1]))
    return pd.DataFrame(rows, columns=["user_idx", "user_id", "train_items", "valid_target", "test_target"])


def settings(**training) -> SASRecSettings:
    return SASRecSettings(max_len=12, hidden_size=16, dropout=0.0, training=TrainingConfig(
        **{"epochs": 3, "batch_size": 16, "lr": 1e-2, "device": "cpu", "progress": False, **training}))


def test_train_sasrec_learns_and_its_log_is_the_validation_metric_of_the_kept_weights():
    users = successor_users(64)
    model, result = train_sasrec(users, N_ITEMS, settings(epochs=30, patience=30, eval_users=32))
    assert model.config.n_items == N_ITEMS and model.config.max_len == 12 and model.config.hidden_size == 16
    assert len(result.history) == 30 and result.best_metric > 0.5
    # The model holds the best epoch's weights: its metric on the same seeded users is the best one logged.
    valid = eval_user_sample(users, 32, 42)
    model.eval()
    assert validation_metric(model, valid, batch_size=16) == pytest.approx(result.best_metric, abs=1e-12)


def test_train_sasrec_is_repeatable_and_the_sampled_softmax_trains_too():
    users = successor_users(40)
    first = train_sasrec(users, N_ITEMS, settings())[1].history
    again = train_sasrec(users, N_ITEMS, settings())[1].history
    assert [r["loss"] for r in first] == [r["loss"] for r in again] and [r["metric"] for r in first] == [r["metric"] for r in again]
    sampled = train_sasrec(users, N_ITEMS, replace(settings(), loss="sampled_softmax", n_sampled_negatives=5))[1].history
    assert [r["loss"] for r in sampled] != [r["loss"] for r in first] and all(np.isfinite(r["loss"]) for r in sampled)


def test_eval_user_sample_is_seeded_and_in_row_order():
    users = successor_users(50)
    sample = eval_user_sample(users, 10, 7)
    assert len(sample) == 10 and sample["user_idx"].is_monotonic_increasing
    assert sample.equals(eval_user_sample(users, 10, 7))
    assert eval_user_sample(users, None, 7) is users and eval_user_sample(users, 50, 7) is users


def test_length_bucketed_batches_hold_every_row_once_with_similar_lengths_in_a_batch():
    lengths = torch.randint(1, 200, (1000,), generator=torch.Generator().manual_seed(1))
    batches = length_bucketed_batches(lengths, 32, 4, torch.Generator().manual_seed(2))
    assert sorted(torch.cat(batches).tolist()) == list(range(1000))
    assert max(len(b) for b in batches) == 32
    # within a window of 4 batches the lengths are sorted, so a batch spans far less than random ones do
    spread = [int(lengths[b].max() - lengths[b].min()) for b in batches]
    plain = length_bucketed_batches(lengths, 32, None, torch.Generator().manual_seed(2))
    assert sum(spread) < 0.4 * sum(int(lengths[b].max() - lengths[b].min()) for b in plain)
    again = length_bucketed_batches(lengths, 32, 4, torch.Generator().manual_seed(2))
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))  # the generator decides
    assert torch.equal(torch.cat(plain), torch.randperm(1000, generator=torch.Generator().manual_seed(2)))


def test_sasrec_counts_users_and_validates_inside_epochs_where_configured():
    users = successor_users(64)
    model, result = train_sasrec(users, N_ITEMS, settings(epochs=3, eval_users=32, validate_every_examples=20))
    assert [r["examples_seen"] for r in result.history] == [64, 128, 192]  # a SASRec example is a user's sequence
    for epoch, record in enumerate(result.history):
        points = [p["examples_seen"] for p in record["within_epoch"]]
        assert len(points) >= 2 and all(64 * epoch + 20 <= p < 64 * (epoch + 1) for p in points)
    # Wherever the best point was, the model holds its weights.
    model.eval()
    valid = eval_user_sample(users, 32, 42)
    assert validation_metric(model, valid, batch_size=16) == pytest.approx(result.best_metric, abs=1e-12)


def real_users(fmt: str, name: str, max_users: int | None = None) -> pd.DataFrame:
    """``user_sequences`` of a real data set as data_processing builds them (the quick env: ``max_users`` 300)."""
    paths = (AMAZON / "interactions.csv", AMAZON / "items.csv") if fmt == "csv" else (None, None)
    table, _, _ = prepare_interactions(fmt, name, *paths, text_fields=None, k_core=None, min_user_interactions=3,
                                       max_text_chars=2000, max_users=max_users, seed=42, n_negatives=1)
    return leave_one_out(table)


@pytest.mark.parametrize(("fmt", "name", "max_users", "dropout", "low", "high"), [
    ("movielens", "ml-1m", None, 0.2, 160, 170),   # the default run's data: the SASRec paper's 0.2
    ("movielens", "ml-1m", 300, 0.2, 160, 175),    # the quick env's 300 users
    ("movielens", "ml-100k", None, 0.2, 100, 110),
    ("csv", "amazon-scientific", None, 0.5, 4, 6),  # the shared Amazon set: the paper's 0.5 for sparse data
])
def test_auto_dropout_is_the_papers_by_density(fmt, name, max_users, dropout, low, high):
    value, mean_items = auto_dropout(real_users(fmt, name, max_users))
    assert value == dropout and low < mean_items < high


def test_auto_dropout_is_resolved_into_the_model_and_logged_and_a_number_wins(caplog):
    users = successor_users(40)  # 3-9 training items each: sparse
    assert SASRecSettings().dropout == SASRecTextSettings().dropout == "auto"
    with caplog.at_level(logging.INFO, logger="llm_seqrec.training.id_model"):
        model, _ = train_sasrec(users, N_ITEMS, replace(settings(epochs=1), dropout="auto"))
    assert model.config.dropout == 0.5 and model.to_artifact()["config"]["dropout"] == 0.5
    assert model.embedding_dropout.p == 0.5 and model.blocks[0].dropout.p == 0.5
    assert "sasrec: dropout auto = 0.5 (" in caplog.text
    assert train_sasrec(users, N_ITEMS, replace(settings(epochs=1), dropout=0.3))[0].config.dropout == 0.3
    # Dense users (50 training items each) resolve to 0.2.
    dense = users.assign(train_items=[[(k % N_ITEMS) + 1 for k in range(u, u + 50)] for u in range(len(users))])
    assert auto_dropout(dense) == (0.2, 50.0)
