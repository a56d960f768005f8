"""sasrec_text: SASRec whose items are their ID embedding joined with their frozen text vector."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from llm_seqrec.evaluation.metrics import metrics_from_ranks
from llm_seqrec.evaluation.scoring import score_table
from llm_seqrec.models.sasrec import SASRec, SASRecConfig
from llm_seqrec.models.sasrec_text import SASRecText, SASRecTextConfig, TextFusion, id_model_from_artifact
from llm_seqrec.training.config import TrainingConfig
from llm_seqrec.training.id_model import SASRecSettings, SASRecTextSettings, train_sasrec, train_sasrec_text


def text_model(combine: str = "add", n_items: int = 12, text_dim: int = 8, **fusion) -> SASRecText:
    torch.manual_seed(0)
    vectors = torch.randn(n_items + 1, text_dim)
    has_text = torch.ones(n_items + 1, dtype=torch.bool)
    has_text[[0, 5]] = False
    config = SASRecTextConfig(n_items=n_items, max_len=10, hidden_size=16, text_dim=text_dim,
                              fusion=TextFusion(combine=combine, **fusion))
    return SASRecText(config, vectors, has_text)


@pytest.mark.parametrize("combine", ["add", "gate", "concat"])
def test_items_are_tied_and_an_item_without_text_is_its_id_embedding(combine):
    model = text_model(combine, whiten=combine == "gate").eval()
    items = model.item_vectors()
    assert items.shape == (13, 16) and not items[0].any()
    assert model.text_vectors[5].abs().sum() == 0 and model.text_vectors[0].abs().sum() == 0
    if combine != "concat":
        torch.testing.assert_close(items[5], model.item_embedding.weight[5])
    state = torch.randn(2, 16)
    torch.testing.assert_close(model.score_items(state)[:, 1:], state @ items[1:].T)
    seq = torch.tensor([[0, 3, 4], [1, 2, 6]])
    expected = SASRec.forward(model, seq)  # the input side reads the same table
    torch.testing.assert_close(model.forward(seq), expected)


def test_artifact_round_trip_and_the_id_model_loader():
    model = text_model("concat").eval()
    restored = id_model_from_artifact(model.to_artifact()).eval()
    assert isinstance(restored, SASRecText) and restored.fingerprint() == model.fingerprint()
    torch.testing.assert_close(restored.item_vectors(), model.item_vectors())
    plain = SASRec(SASRecConfig(n_items=12, max_len=10, hidden_size=16))
    assert type(id_model_from_artifact(plain.to_artifact())) is SASRec


def test_id_dropout_drops_rows_only_in_training():
    model = text_model("add", id_dropout=0.5)
    model.train()
    torch.manual_seed(1)
    dropped = model.item_vectors()
    text_only = model.text_projection(model.text_vectors)
    assert any(torch.allclose(dropped[i], text_only[i]) for i in range(1, 13))
    model.eval()
    torch.testing.assert_close(model.item_vectors()[1:], (model.item_embedding.weight + text_only)[1:])


def test_text_carries_items_whose_ids_carry_nothing():
    """960 items in 8 groups; a user's items all lie in one group, each item in one or two users' histories, so
    an ID says next to nothing about its group, which shows only in the text vectors (a noisy group direction).
    The next item is any item of the user's group: sasrec_text ranks the group by its text, SASRec nearly blind."""
    rng = np.random.default_rng(0)
    groups, per_group, text_dim = 8, 120, 32
    n_items = groups * per_group
    group_of = np.repeat(np.arange(groups), per_group)
    directions = rng.normal(size=(groups, text_dim))
    vectors = directions[group_of] + 0.5 * rng.normal(size=(n_items, text_dim))
    rows = []
    for user in range(320):
        members = np.flatnonzero(group_of == user % groups) + 1
        items = [int(i) for i in rng.choice(members, 7, replace=False)]
        rows.append({"user_idx": user, "train_items": items[:5], "valid_target": items[5], "test_target": items[6]})
    users = pd.DataFrame(rows)
    table = pd.DataFrame({"item_idx": np.arange(1, n_items + 1), "has_text": True,
                          "embedding": list(vectors.astype(np.float32))})
    training = TrainingConfig(epochs=8, batch_size=32, lr=0.005, patience=8, progress=False)
    shape = {"max_len": 10, "hidden_size": 16, "dropout": 0.1}

    def test_hr(model) -> float:
        scores = score_table(model.eval(), users, None, splits=["test"], exclude_seen=True, batch_size=256)
        return metrics_from_ranks(scores["rank"].to_numpy(), [10], "full")["hr@10"]

    plain, _ = train_sasrec(users, n_items, SASRecSettings(**shape, training=training), exclude_seen=True)
    text, _ = train_sasrec_text(users, table, n_items, SASRecTextSettings(**shape, training=training), exclude_seen=True)
    chance = 10 / (n_items - 5)  # the group's share would be 10 / 115
    assert test_hr(text) > 4 * chance
    assert test_hr(text) > 2 * test_hr(plain)
