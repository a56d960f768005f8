from unittest import mock

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from llm_seqrec.datasets import TorchWeightsDataset
from llm_seqrec.evaluation.metrics import metrics_from_ranks, target_ranks
from llm_seqrec.data.padding import left_pad
from llm_seqrec.models import SASRec, SASRecConfig
from llm_seqrec.models.sasrec import Dropout
from llm_seqrec.models.recommender import FullRanker, Queries

N_ITEMS = 30


def successor_sequences(n: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """Sequences in which item i is always followed by item i + 1 (wrapping round after N_ITEMS)."""
    starts = torch.randint(0, N_ITEMS, (n, 1), generator=generator)
    return (starts + torch.arange(length)) % N_ITEMS + 1


def small_model(**overrides) -> SASRec:
    return SASRec(SASRecConfig(**{"n_items": N_ITEMS, "max_len": 12, "hidden_size": 16, "dropout": 0.0, **overrides}))


def test_learns_successor_sequences():
    generator = torch.Generator().manual_seed(0)
    model = small_model(dropout=0.1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        # Random-length histories, so positions near the start of the window are trained as well.
        seq = successor_sequences(32, 11, generator)
        seq[:, : int(torch.randint(0, 8, (1,), generator=generator))] = 0
        loss = model.loss(seq[:, :-1], seq[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    model.eval()
    held_out = successor_sequences(200, 6, generator)
    with torch.no_grad():
        scores = model.score_items(model.user_state(held_out[:, :-1]))
    ranks = target_ranks(scores, held_out[:, -1]).numpy()
    assert metrics_from_ranks(ranks, [10], "full")["ndcg@10"] > 0.95


def test_later_items_do_not_change_earlier_states():
    model = small_model().eval()
    seq = torch.tensor([[0, 0, 3, 7, 1, 9, 4]])
    changed = seq.clone()
    changed[0, 5] = 22
    with torch.no_grad():
        before, after = model(seq), model(changed)
    torch.testing.assert_close(before[:, :5], after[:, :5], rtol=0, atol=0)
    assert not torch.allclose(before[:, 5:], after[:, 5:])


def test_states_do_not_depend_on_padding():
    model = small_model().eval()
    short = torch.tensor([[5, 6, 2]])
    batch = left_pad([[5, 6, 2], [1, 2, 3, 4, 5, 6, 7, 8]], max_len=12)
    with torch.no_grad():
        alone, padded = model(short), model(batch)
    torch.testing.assert_close(padded[:1, -3:], alone, rtol=1e-5, atol=1e-6)
    assert torch.all(padded[0, :-3] == 0)


def test_left_pad_keeps_the_most_recent_items():
    padded = left_pad([[1, 2, 3, 4], [5]], max_len=3)
    assert padded.tolist() == [[2, 3, 4], [0, 0, 5]]


def test_sampled_softmax_over_every_item_equals_cross_entropy():
    model = small_model()
    seq = torch.tensor([[0, 0, 3, 7, 1, 9], [4, 5, 6, 7, 8, 9]])
    targets = torch.tensor([[0, 0, 7, 1, 9, 2], [5, 6, 7, 8, 9, 10]])
    every_item = torch.arange(1, N_ITEMS + 1)
    torch.testing.assert_close(model.loss(seq, targets, every_item), model.loss(seq, targets))


def test_scores_mask_padding_item():
    model = small_model().eval()
    with torch.no_grad():
        scores = model.score_items(model.user_state(torch.tensor([[1, 2, 3]])))
    assert scores.shape == (1, N_ITEMS + 1)
    assert scores[0, 0] == float("-inf") and torch.isfinite(scores[0, 1:]).all()


@pytest.mark.parametrize("num_heads", [1, 2])
def test_artifact_round_trip_gives_identical_scores(tmp_path, num_heads):
    model = small_model(num_heads=num_heads, num_blocks=3, attention_dropout=0.1).eval()
    dataset = TorchWeightsDataset(filepath=str(tmp_path / "sasrec"))
    dataset.save(model.to_artifact())
    restored = SASRec.from_artifact(dataset.load()).eval()
    assert restored.config == model.config
    seq = left_pad([[1, 2, 3], [4, 5, 6, 7, 8]], max_len=12)
    with torch.no_grad():
        expected = model.score_items(model.user_state(seq))
        actual = restored.score_items(restored.user_state(seq))
    assert torch.equal(actual, expected)


def test_score_all_scores_the_queries_last_max_len_items():
    model = small_model().eval()
    assert isinstance(model, FullRanker) and model.backbone_dtype == ""
    histories = ((1, 2, 3), tuple(range(1, 20)))  # the second is cut to its last 12 items
    with torch.no_grad():
        scores = model.score_all(Queries((1, 2), "valid", histories))
        expected = model.score_items(model.user_state(left_pad(histories, max_len=12)))
    assert scores.shape == (2, N_ITEMS + 1) and torch.equal(scores, expected)


def test_config_refuses_heads_that_do_not_divide_the_hidden_size():
    with pytest.raises(ValueError, match="hidden_size=16 is not divisible by num_heads=3"):
        small_model(num_heads=3)


def test_rejects_sequences_longer_than_max_len():
    with pytest.raises(ValueError, match="max_len"):
        small_model()(torch.ones(1, 13, dtype=torch.long))


def test_padding_rows_in_loss_are_ignored():
    model = small_model()
    seq, targets = torch.tensor([[0, 0, 3, 7]]), torch.tensor([[0, 0, 7, 1]])
    wider_seq = torch.cat([torch.zeros(1, 5, dtype=torch.long), seq], 1)
    wider_targets = torch.cat([torch.zeros(1, 5, dtype=torch.long), targets], 1)
    np.testing.assert_allclose(model.loss(seq, targets).item(), model.loss(wider_seq, wider_targets).item(), rtol=1e-6)


def test_chunked_loss_equals_the_whole_logits_cross_entropy_on_a_real_batch(amazon_sample):
    """``SASRec.loss`` (positions with a target gathered, then chunked against the item table) against
    the loss as it was computed before: ``F.cross_entropy`` of the whole logits; float32, value and
    every parameter's gradient."""
    interactions = pd.read_csv(amazon_sample / "interactions.csv").sort_values(["user_id", "timestamp"], kind="stable")
    item_idx = {item: i + 1 for i, item in enumerate(sorted(interactions["item_id"].unique()))}
    sequences = [[item_idx[i] for i in items] for items in interactions.groupby("user_id")["item_id"].agg(list)][:64]
    inputs, targets = left_pad([s[:-1] for s in sequences], 50), left_pad([s[1:] for s in sequences], 50)
    assert (targets == 0).any() and (targets != 0).sum() > 100  # padding to skip, and many positions
    model = SASRec(SASRecConfig(n_items=len(item_idx), max_len=50, hidden_size=32, dropout=0.0))

    def gradients(loss: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip((n for n, _ in model.named_parameters()), torch.autograd.grad(loss, list(model.parameters())), strict=True))

    keep = targets != 0
    before = F.cross_entropy(model(inputs)[keep] @ model.item_embedding.weight[1:].T, targets[keep] - 1)
    expected = gradients(before)
    with mock.patch("llm_seqrec.models.losses.CHUNK_LOGITS", 64 * len(item_idx)):  # several chunks
        chunked = model.loss(inputs, targets)
    actual = gradients(chunked)
    torch.testing.assert_close(chunked, before, rtol=1e-6, atol=0)
    for name, grad in expected.items():
        torch.testing.assert_close(actual[name], grad, rtol=1e-5, atol=1e-8, msg=name)


def masked_attention_states(model: SASRec, item_seq: torch.Tensor) -> torch.Tensor:
    """The states as the model computed them before rows were rotated: left-padded rows, attention under
    a [B, 1, L, L] mask (causal, items never see padding, padding sees itself), the same weights."""
    length, valid = item_seq.shape[1], item_seq != 0
    x = model.item_embedding(item_seq) * model.config.hidden_size**0.5 + model.position_embedding(torch.arange(length - 1, -1, -1))
    x = x * valid.unsqueeze(-1)
    mask = (torch.ones(length, length, dtype=torch.bool).tril() & (valid.unsqueeze(1) | torch.eye(length, dtype=torch.bool))).unsqueeze(1)
    for block in model.blocks:
        h, attention = block.attention_norm(x), block.attention
        q, k, v = attention.qkv(h).view(*h.shape[:2], 3, attention.num_heads, -1).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + attention.out(attended.transpose(1, 2).reshape(h.shape))
        x = x + block.ffn(block.ffn_norm(x))
    return model.final_norm(x) * valid.unsqueeze(-1)


def test_rotated_causal_states_equal_the_masked_attention_ones_on_a_real_batch(amazon_sample):
    interactions = pd.read_csv(amazon_sample / "interactions.csv").sort_values(["user_id", "timestamp"], kind="stable")
    item_idx = {item: i + 1 for i, item in enumerate(sorted(interactions["item_id"].unique()))}
    sequences = [[item_idx[i] for i in items] for items in interactions.groupby("user_id")["item_id"].agg(list)][:64]
    inputs = left_pad(sequences, 30)
    assert (inputs == 0).any() and (inputs != 0).all(1).any()  # rows with padding and rows without
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=len(item_idx), max_len=30, hidden_size=32, num_heads=2)).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(inputs), masked_attention_states(model, inputs), rtol=1e-5, atol=1e-5)


def test_dropout_keeps_each_value_with_probability_1_minus_p_and_rescales():
    torch.manual_seed(0)
    dropout, x = Dropout(0.2), torch.rand(200_000) + 1
    out = dropout(x)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.8) < 0.005
    torch.testing.assert_close(out[kept], x[kept] / 0.8)
    assert torch.equal(dropout.eval()(x), x)
