"""Losses, as pure functions of scores or states (no model, no Kedro).

- ``linear_cross_entropy``: SASRec's next-item cross-entropy over every item, softmax(states @ items.T),
  computed chunk by chunk with its gradients, so the ``[positions, items]`` logits are never held whole.

- ``yes_no_bce``: LLM-TRSR. The model's probability of "Yes" is the softmax over the two answer
  logits only, so p(Yes) = σ(logit_Yes − logit_No) and the loss is binary cross-entropy on that
  log-odds.
- ``dmpo_loss`` (DMPO, Bai et al. 2024) and ``sdpo_loss`` (S-DPO, Chen et al. 2024): preference losses
  over one positive and k negatives from sequence log-probabilities under the policy and the frozen
  reference, r = log πθ(y|x) − log πref(y|x).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def yes_no_bce(log_odds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean BCE of p(Yes) = σ(``log_odds``) against ``labels`` (1 = the user chose the candidate)."""
    return F.binary_cross_entropy_with_logits(log_odds, labels.to(log_odds.dtype))


def _rewards(policy_pos: Tensor, policy_neg: Tensor, ref_pos: Tensor, ref_neg: Tensor) -> tuple[Tensor, Tensor]:
    if policy_neg.dim() != 2 or policy_neg.shape != ref_neg.shape or policy_pos.shape != ref_pos.shape:
        raise ValueError(
            f"expected positives [B] and negatives [B, k] for policy and reference; got {tuple(policy_pos.shape)}, "
            f"{tuple(policy_neg.shape)}, {tuple(ref_pos.shape)}, {tuple(ref_neg.shape)}"
        )
    return policy_pos - ref_pos, policy_neg - ref_neg


def dmpo_loss(policy_pos: Tensor, policy_neg: Tensor, ref_pos: Tensor, ref_neg: Tensor, beta: float) -> Tensor:
    """Mean over the batch of −log σ(β·r₊ − (β/k)·Σᵢ rᵢ): the positive's reward against the mean of the
    k negatives' rewards. Positives are ``[B]`` sequence log-probabilities, negatives ``[B, k]``;
    with k = 1 this is DPO."""
    reward_pos, reward_neg = _rewards(policy_pos, policy_neg, ref_pos, ref_neg)
    margin = beta * reward_pos - beta * reward_neg.mean(dim=1)
    return -F.logsigmoid(margin).mean()


def sdpo_loss(policy_pos: Tensor, policy_neg: Tensor, ref_pos: Tensor, ref_neg: Tensor, beta: float) -> Tensor:
    """Mean over the batch of −log σ(−log Σᵢ exp(β·(rᵢ − r₊))), S-DPO's softmax form: the negatives
    compete through a log-sum-exp, so the hardest negative dominates; with k = 1 it is DPO as well."""
    reward_pos, reward_neg = _rewards(policy_pos, policy_neg, ref_pos, ref_neg)
    return -F.logsigmoid(-torch.logsumexp(beta * (reward_neg - reward_pos.unsqueeze(1)), dim=1)).mean()


PREFERENCE_LOSSES = {"dmpo": dmpo_loss, "sdpo": sdpo_loss}

# Rows of logits per chunk: 2**20 logits (4 MiB in float32) whatever the number of items, small
# enough for the row-wise passes to stay near the cache, large enough for the matmuls to run at speed.
CHUNK_LOGITS = 2**20


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         chunk_rows: int | None = None, matmul_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``F.cross_entropy(hidden @ weight.T, targets)`` (the mean over rows) without the whole
    ``[N, V]`` logits: each chunk of ``chunk_rows`` rows (default: ``CHUNK_LOGITS // V``) computes its
    logits, its log-sum-exp and, when a gradient is needed, its part of both gradients (softmax minus
    one-hot is all the backward pass needs), then frees them. The matmuls follow autocast (bf16 where
    it is on); the log-sum-exp and the gradients accumulate in float32.

    ``matmul_dtype`` (e.g. ``torch.bfloat16``, where the CPU has AMX or AVX512-BF16) runs the three
    matmuls alone in that dtype, whatever autocast says: the log-softmax, the softmax-minus-one-hot and
    the sums over chunks stay float32, and the returned gradients have the inputs' dtypes."""
    if chunk_rows is None:
        chunk_rows = max(1, CHUNK_LOGITS // weight.shape[0])
    return _LinearCrossEntropy.apply(hidden, weight, targets, chunk_rows, matmul_dtype)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_rows: int,
                matmul_dtype: torch.dtype | None) -> torch.Tensor:
        n = hidden.shape[0]
        if n == 0:
            raise ValueError("linear_cross_entropy needs at least one row")
        grad_hidden = torch.empty_like(hidden, dtype=torch.float32) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        inputs_dtype = (hidden.dtype, weight.dtype)
        if matmul_dtype is not None:
            hidden, weight = hidden.to(matmul_dtype), weight.to(matmul_dtype)
        for start in range(0, n, chunk_rows):
            rows = hidden[start : start + chunk_rows]
            target = targets[start : start + chunk_rows].unsqueeze(1)
            # One fused row-wise pass (max, exp, sum) in float32, whatever dtype the matmul gave.
            log_probs = torch.log_softmax(rows @ weight.T, dim=1, dtype=torch.float32)
            total -= log_probs.gather(1, target).sum()
            if grad_hidden is None and grad_weight is None:
                continue
            # n * d(mean loss)/d(logits) = softmax - one-hot, in place of the log-probabilities;
            # the 1/n goes on the [rows, d] sides, which are far smaller than [rows, V].
            probs = log_probs.exp_()
            probs.scatter_add_(1, target, torch.full_like(target, -1, dtype=probs.dtype))
            if matmul_dtype is not None:
                probs = probs.to(matmul_dtype)
            if grad_hidden is not None:
                grad_hidden[start : start + chunk_rows] = (probs @ weight).div_(n)
            if grad_weight is not None:
                grad_weight += probs.T @ (rows / n)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.input_dtypes = inputs_dtype
        return total / n

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        hidden_dtype, weight_dtype = ctx.input_dtypes
        return (
            None if grad_hidden is None else (grad_hidden * grad_output).to(hidden_dtype),
            None if grad_weight is None else (grad_weight * grad_output).to(weight_dtype),
            None,
            None,
            None,
        )
