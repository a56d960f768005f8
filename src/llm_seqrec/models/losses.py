"""Losses of the LoRA LLM recommenders, as pure functions of scores (no model, no Kedro).

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


def yes_no_bce(log_odds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean BCE of p(Yes) = σ(``log_odds``) against ``labels`` (1 = the user chose the candidate)."""
    return F.binary_cross_entropy_with_logits(log_odds, labels.to(log_odds.dtype))


def _rewards(
    policy_pos: torch.Tensor, policy_neg: torch.Tensor, ref_pos: torch.Tensor, ref_neg: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    if policy_neg.dim() != 2 or policy_neg.shape != ref_neg.shape or policy_pos.shape != ref_pos.shape:
        raise ValueError(
            f"expected positives [B] and negatives [B, k] for policy and reference; got {tuple(policy_pos.shape)}, "
            f"{tuple(policy_neg.shape)}, {tuple(ref_pos.shape)}, {tuple(ref_neg.shape)}"
        )
    return policy_pos - ref_pos, policy_neg - ref_neg


def dmpo_loss(
    policy_pos: torch.Tensor,
    policy_neg: torch.Tensor,
    ref_pos: torch.Tensor,
    ref_neg: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Mean over the batch of −log σ(β·r₊ − (β/k)·Σᵢ rᵢ): the positive's reward against the mean of the
    k negatives' rewards. Positives are ``[B]`` sequence log-probabilities, negatives ``[B, k]``;
    with k = 1 this is DPO."""
    reward_pos, reward_neg = _rewards(policy_pos, policy_neg, ref_pos, ref_neg)
    margin = beta * reward_pos - beta * reward_neg.mean(dim=1)
    return -F.logsigmoid(margin).mean()


def sdpo_loss(
    policy_pos: torch.Tensor,
    policy_neg: torch.Tensor,
    ref_pos: torch.Tensor,
    ref_neg: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Mean over the batch of −log σ(−log Σᵢ exp(β·(rᵢ − r₊))), S-DPO's softmax form: the negatives
    compete through a log-sum-exp, so the hardest negative dominates; with k = 1 it is DPO as well."""
    reward_pos, reward_neg = _rewards(policy_pos, policy_neg, ref_pos, ref_neg)
    return -F.logsigmoid(-torch.logsumexp(beta * (reward_neg - reward_pos.unsqueeze(1)), dim=1)).mean()


PREFERENCE_LOSSES = {"dmpo": dmpo_loss, "sdpo": sdpo_loss}
