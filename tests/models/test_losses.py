"""The recommender losses against hand computations on fixed numbers, and the chunked cross-entropy
against the whole-logits one."""

import math

import pytest
import torch
import torch.nn.functional as F

from llm_seqrec.models.losses import dmpo_loss, linear_cross_entropy, sdpo_loss, yes_no_bce


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


# Two examples, k = 3 negatives: sequence log-probabilities under the policy and the reference.
POLICY_POS = [-4.0, -7.5]
POLICY_NEG = [[-6.0, -9.0, -5.0], [-7.0, -8.0, -12.0]]
REF_POS = [-5.0, -7.0]
REF_NEG = [[-6.5, -8.0, -5.5], [-6.0, -8.5, -11.0]]


def tensors():
    return (torch.tensor(POLICY_POS), torch.tensor(POLICY_NEG), torch.tensor(REF_POS), torch.tensor(REF_NEG))


def test_dmpo_loss_equals_a_hand_computation():
    beta = 0.5
    expected = []
    for b in range(2):
        reward_pos = POLICY_POS[b] - REF_POS[b]
        reward_neg = [p - r for p, r in zip(POLICY_NEG[b], REF_NEG[b])]
        expected.append(-log_sigmoid(beta * reward_pos - beta / 3 * sum(reward_neg)))
    # By hand for the first example: r+ = 1, r- = (0.5, -1, 0.5), margin = 0.5 - 0 = 0.5.
    assert expected[0] == pytest.approx(-log_sigmoid(0.5))
    assert dmpo_loss(*tensors(), beta=beta).item() == pytest.approx(sum(expected) / 2, rel=1e-6)


def test_sdpo_loss_equals_a_hand_computation():
    beta = 2.0
    expected = []
    for b in range(2):
        reward_pos = POLICY_POS[b] - REF_POS[b]
        lse = math.log(sum(math.exp(beta * ((p - r) - reward_pos)) for p, r in zip(POLICY_NEG[b], REF_NEG[b])))
        expected.append(-log_sigmoid(-lse))
    assert sdpo_loss(*tensors(), beta=beta).item() == pytest.approx(sum(expected) / 2, rel=1e-6)


@pytest.mark.parametrize("loss", [dmpo_loss, sdpo_loss])
def test_one_negative_is_dpo(loss):
    policy_pos, policy_neg, ref_pos, ref_neg = tensors()
    policy_neg, ref_neg = policy_neg[:, :1], ref_neg[:, :1]
    beta = 0.1
    dpo = -torch.nn.functional.logsigmoid(beta * ((policy_pos - ref_pos) - (policy_neg[:, 0] - ref_neg[:, 0]))).mean()
    torch.testing.assert_close(loss(policy_pos, policy_neg, ref_pos, ref_neg, beta=beta), dpo)


def test_preference_gradients_raise_the_positive_and_lower_the_negatives():
    policy_pos, policy_neg, ref_pos, ref_neg = tensors()
    policy_pos.requires_grad_(True)
    policy_neg.requires_grad_(True)
    dmpo_loss(policy_pos, policy_neg, ref_pos, ref_neg, beta=1.0).backward()
    assert (policy_pos.grad < 0).all() and (policy_neg.grad > 0).all()


def test_shapes_are_checked():
    policy_pos, policy_neg, ref_pos, ref_neg = tensors()
    with pytest.raises(ValueError, match="negatives"):
        dmpo_loss(policy_pos, policy_neg[:, 0], ref_pos, ref_neg[:, 0], beta=1.0)


def test_yes_no_bce_is_the_two_way_softmax_cross_entropy():
    logit_yes, logit_no = torch.tensor([2.0, -1.0, 0.3]), torch.tensor([0.5, 1.5, 0.3])
    labels = torch.tensor([1.0, 0.0, 1.0])
    two_way = torch.log_softmax(torch.stack([logit_yes, logit_no], dim=1), dim=1)
    expected = -(labels * two_way[:, 0] + (1 - labels) * two_way[:, 1]).mean()
    torch.testing.assert_close(yes_no_bce(logit_yes - logit_no, labels), expected)


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, None])
def test_linear_cross_entropy_equals_cross_entropy_of_the_whole_logits_with_its_gradients(chunk_rows):
    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(37, 16, generator=generator, requires_grad=True)
    weight = torch.randn(50, 16, generator=generator, requires_grad=True)
    targets = torch.randint(0, 50, (37,), generator=generator)
    expected = F.cross_entropy(hidden @ weight.T, targets)
    expected_grads = torch.autograd.grad(2.5 * expected, [hidden, weight])
    actual = linear_cross_entropy(hidden, weight, targets, chunk_rows)
    actual_grads = torch.autograd.grad(2.5 * actual, [hidden, weight])  # the upstream gradient is applied
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)
    for a, e in zip(actual_grads, expected_grads, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-7)


def test_linear_cross_entropy_without_gradients_and_with_one_frozen_input():
    hidden, weight = torch.randn(9, 4), torch.randn(6, 4, requires_grad=True)
    targets = torch.randint(0, 6, (9,))
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(hidden, weight, targets, 4), F.cross_entropy(hidden @ weight.T, targets))
    (grad,) = torch.autograd.grad(linear_cross_entropy(hidden, weight, targets, 4), [weight])
    (expected,) = torch.autograd.grad(F.cross_entropy(hidden @ weight.T, targets), [weight])
    torch.testing.assert_close(grad, expected)


def test_linear_cross_entropy_under_bf16_autocast_stays_close_and_returns_float32_gradients():
    generator = torch.Generator().manual_seed(4)
    hidden = torch.randn(64, 32, generator=generator, requires_grad=True)
    weight = (0.1 * torch.randn(300, 32, generator=generator)).requires_grad_()
    targets = torch.randint(0, 300, (64,), generator=generator)
    expected = F.cross_entropy(hidden @ weight.T, targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        actual = linear_cross_entropy(hidden, weight, targets, 16)
    actual.backward()
    assert actual.dtype == hidden.grad.dtype == weight.grad.dtype == torch.float32
    torch.testing.assert_close(actual, expected, rtol=2e-2, atol=0)


def test_linear_cross_entropy_with_bf16_matmuls_stays_close_and_returns_the_inputs_dtypes():
    """The three matmuls alone in bf16 (log-softmax and sums float32): within bf16's rounding of the
    whole-logits float32 loss and gradients, and not equal to it (the bf16 path did run)."""
    generator = torch.Generator().manual_seed(5)
    hidden = torch.randn(200, 32, generator=generator, requires_grad=True)
    weight = (0.3 * torch.randn(500, 32, generator=generator)).requires_grad_()
    targets = torch.randint(0, 500, (200,), generator=generator)
    expected = F.cross_entropy(hidden @ weight.T, targets)
    expected_grads = torch.autograd.grad(expected, [hidden, weight])
    actual = linear_cross_entropy(hidden, weight, targets, 48, matmul_dtype=torch.bfloat16)
    actual_grads = torch.autograd.grad(actual, [hidden, weight])
    assert actual.dtype == actual_grads[0].dtype == actual_grads[1].dtype == torch.float32
    torch.testing.assert_close(actual, expected, rtol=5e-3, atol=0)
    assert actual.item() != expected.item()
    for a, e in zip(actual_grads, expected_grads, strict=True):
        assert ((a - e).norm() / e.norm()).item() < 2e-2
