"""M-Former: the router's top-k, the load-balancing loss on known inputs, and the query transformer."""

import math

import pytest
import torch

from llm_seqrec.models.mformer import MFormer, MFormerConfig, Routing, load_balance_loss, route


def test_router_averages_per_item_softmax_over_real_positions_then_takes_top_k():
    # Two users, three positions, three experts; user 0's first position is padding and must not vote.
    logits = torch.tensor([
        [[9.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]],
        [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 3.0]],
    ])
    valid = torch.tensor([[False, True, True], [True, True, True]])
    routing = route(logits, valid, top_k=2)

    per_item = logits.softmax(-1)
    expected = torch.stack([per_item[0, 1:].mean(0), per_item[1].mean(0)])
    torch.testing.assert_close(routing.probs, expected)
    torch.testing.assert_close(routing.probs.sum(-1), torch.ones(2))
    # User 0: position 1 favours expert 1 (e^2), position 2 expert 2 (e^1); the padded expert-0 vote is ignored.
    assert routing.experts.tolist() == [[1, 2], [2, 0]]
    torch.testing.assert_close(routing.gates, routing.probs.gather(1, routing.experts))

    top1 = route(logits, valid, top_k=1)
    assert top1.experts.tolist() == [[1], [2]]


def _routing(probs: list[list[float]], top_k: int) -> Routing:
    probs = torch.tensor(probs)
    gates, experts = probs.topk(top_k, dim=-1)
    return Routing(probs, experts, gates)


def test_load_balance_loss_on_known_inputs():
    # Everyone routed to expert 0: f = (1, 0, 0), P = (0.65, 0.25, 0.1), loss = 3 * 0.65.
    collapsed = _routing([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]], top_k=1)
    assert load_balance_loss(collapsed).item() == pytest.approx(1.95)
    # Even routing with even mean probabilities: the minimum, 1.
    balanced = _routing([[0.9, 0.1], [0.1, 0.9]], top_k=1)
    assert load_balance_loss(balanced).item() == pytest.approx(1.0)
    # Top-2 counts both choices: f = (2, 2, 0) / 4, P = (0.5, 0.325, 0.175) -> 3 * (0.25 + 0.1625).
    top2 = _routing([[0.6, 0.3, 0.1], [0.4, 0.35, 0.25]], top_k=2)
    assert load_balance_loss(top2).item() == pytest.approx(1.2375)


def test_load_balance_gradient_moves_probability_off_the_busy_expert():
    logits = torch.tensor([[2.0, 0.0], [1.0, 0.0]], requires_grad=True)
    probs = logits.softmax(-1)
    gates, experts = probs.topk(1, dim=-1)
    load_balance_loss(Routing(probs, experts, gates)).backward()
    # Expert 0 takes every user, so lowering its logit lowers the loss.
    assert (logits.grad[:, 0] > 0).all() and (logits.grad[:, 1] < 0).all()


def _mformer(**overrides) -> MFormer:
    config = MFormerConfig(id_size=8, output_size=12, hidden_size=16, n_experts=4, n_query_tokens=3, num_heads=2,
                           num_blocks=3, **overrides)
    return MFormer(config)


def test_mformer_output_ignores_padding_and_has_the_prefix_shape():
    model = _mformer(top_k=2).eval()
    states = torch.randn(1, 4, 8)
    padded = torch.cat([torch.zeros(1, 2, 8), states], dim=1)
    out = model(states, torch.ones(1, 4, dtype=torch.bool))
    out_padded = model(padded, torch.tensor([[False, False, True, True, True, True]]))
    assert out.prefix.shape == (1, 3, 12)
    torch.testing.assert_close(out.prefix, out_padded.prefix)
    assert out.routing.experts.shape == (1, 2)
    assert math.isfinite(out.balance_loss.item())


def test_cross_attention_sits_in_alternate_blocks():
    model = _mformer()
    assert [block.cross_attention is not None for block in model.blocks] == [True, False, True]


def test_router_learns_through_the_prefix_with_top1_gates():
    # Switch-style unnormalised gates: the recommendation loss alone reaches the router.
    model = _mformer(top_k=1)
    out = model(torch.randn(5, 6, 8), torch.ones(5, 6, dtype=torch.bool))
    out.prefix.pow(2).sum().backward()
    assert model.router.weight.grad.abs().sum() > 0
    # Only the chosen experts' queries get gradients.
    touched = model.queries.grad.abs().sum(dim=(1, 2)) > 0
    assert set(touched.nonzero().flatten().tolist()) == set(out.routing.experts.flatten().tolist())


def test_config_rejects_top_k_above_the_experts():
    with pytest.raises(ValueError, match="top_k"):
        MFormerConfig(id_size=8, output_size=8, n_experts=2, top_k=3)
