"""M-Former (Laser, Zhang et al. 2024): query experts that read a frozen ID model's sequence states.

A small query transformer turns the per-position states of a frozen sequential ID model (SASRec) into
``n_query_tokens`` vectors in the LLM's embedding space, the prefix of the LLM input. Its queries come
from ``n_experts`` learned query experts; a router picks ``top_k`` of them per user:

- router: a linear map of each history position's state to expert logits, a softmax per position,
  averaged over the user's real (non-padding) positions, so the whole history votes;
- the chosen experts' queries run through the blocks (self-attention over the queries, and in every
  other block, starting with the first, cross-attention to the ID states), and their outputs are
  summed weighted by the router probability of each chosen expert. The weights are not renormalised
  (Switch Transformer), so with top-1 the router still learns from the recommendation loss;
- a Switch-style load-balancing loss, ``n_experts * sum_i f_i * P_i`` (f_i: share of routing choices
  that went to expert i, P_i: mean router probability of expert i), which is 1 when routing is even.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Annotated, NamedTuple

import torch
import torch.nn.functional as F
from annotated_types import Ge, Lt
from pydantic import ConfigDict
from torch import nn


@dataclass(frozen=True)
class MFormerSettings:
    """The M-Former's own settings (``laser.mformer`` in the parameters); the paper's K=8 experts of
    L=32 query tokens, top-1. Validated by ``params`` too (the ``Annotated`` bounds are pydantic's)."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    hidden_size: Annotated[int, Ge(8)] = 128
    n_experts: Annotated[int, Ge(1)] = 8
    n_query_tokens: Annotated[int, Ge(1)] = 32  # prefix tokens put before the prompt
    top_k: Annotated[int, Ge(1)] = 1
    num_blocks: Annotated[int, Ge(1)] = 2  # cross-attention to the ID states in blocks 1, 3, ...
    num_heads: Annotated[int, Ge(1)] = 4
    dropout: Annotated[float, Ge(0), Lt(1)] = 0.1

    def __post_init__(self) -> None:
        if not 1 <= self.top_k <= self.n_experts:
            raise ValueError(f"mformer.top_k={self.top_k} must lie in 1..mformer.n_experts={self.n_experts}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"mformer.hidden_size={self.hidden_size} is not divisible by mformer.num_heads={self.num_heads}")


@dataclass(frozen=True)
class MFormerConfig(MFormerSettings):
    """The settings and the sizes the surrounding models fix: what an M-Former is built from."""

    id_size: int = field(kw_only=True)  # width of the ID model's states
    output_size: int = field(kw_only=True)  # the LLM's hidden size

    @classmethod
    def sized(cls, settings: MFormerSettings, id_size: int, output_size: int) -> "MFormerConfig":
        return cls(**asdict(settings), id_size=id_size, output_size=output_size)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "MFormerConfig":
        return cls(**data)


class Routing(NamedTuple):
    probs: torch.Tensor  # [B, K] router probabilities, averaged over each user's history
    experts: torch.Tensor  # [B, k] chosen experts, most probable first
    gates: torch.Tensor  # [B, k] their probabilities (the weights of their outputs)


class MFormerOutput(NamedTuple):
    prefix: torch.Tensor  # [B, n_query_tokens, output_size]
    balance_loss: torch.Tensor  # scalar
    routing: Routing


def route(logits: torch.Tensor, valid: torch.Tensor, top_k: int) -> Routing:
    """Per-position softmax over experts, averaged over the ``valid`` positions, then the top-k experts.

    ``logits`` [B, T, K], ``valid`` [B, T] bool (each row with at least one True).
    """
    weights = valid.to(logits.dtype).unsqueeze(-1)
    probs = (logits.softmax(-1) * weights).sum(1) / weights.sum(1).clamp_min(1.0)
    gates, experts = probs.topk(top_k, dim=-1)
    return Routing(probs, experts, gates)


def load_balance_loss(routing: Routing) -> torch.Tensor:
    """Switch Transformer's auxiliary loss ``K * sum_i f_i * P_i`` over the batch; 1 when balanced.

    f_i (share of the batch's routing choices that picked expert i) is a count and carries no
    gradient; the gradient reaches the router through P_i, pushing probability off busy experts.
    """
    n_experts = routing.probs.shape[-1]
    counts = F.one_hot(routing.experts, n_experts).sum(dim=(0, 1)).to(routing.probs.dtype)
    share = counts / counts.sum()
    return n_experts * (share * routing.probs.mean(0)).sum()


class QueryBlock(nn.Module):
    """Pre-LN block: queries attend to each other, then (optionally) to the ID states, then an FFN."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float, cross: bool) -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(hidden_size)
        self.self_attention = nn.MultiheadAttention(hidden_size, num_heads, dropout=dropout, batch_first=True)
        self.cross_norm = nn.LayerNorm(hidden_size) if cross else None
        self.cross_attention = (
            nn.MultiheadAttention(hidden_size, num_heads, dropout=dropout, batch_first=True) if cross else None
        )
        self.ffn_norm = nn.LayerNorm(hidden_size)
        self.ffn = nn.Sequential(
            nn.Linear(hidden_size, 4 * hidden_size), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * hidden_size, hidden_size)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_padding: torch.Tensor) -> torch.Tensor:
        h = self.self_norm(x)
        x = x + self.dropout(self.self_attention(h, h, h, need_weights=False)[0])
        if self.cross_attention is not None:
            h = self.cross_norm(x)
            attended = self.cross_attention(h, memory, memory, key_padding_mask=memory_padding, need_weights=False)[0]
            x = x + self.dropout(attended)
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class MFormer(nn.Module):
    def __init__(self, config: MFormerConfig) -> None:
        super().__init__()
        self.config = config
        h = config.hidden_size
        self.queries = nn.Parameter(torch.randn(config.n_experts, config.n_query_tokens, h) * 0.02)
        self.router = nn.Linear(config.id_size, config.n_experts)
        self.memory_projection = nn.Sequential(nn.Linear(config.id_size, h), nn.LayerNorm(h))
        self.blocks = nn.ModuleList(
            QueryBlock(h, config.num_heads, config.dropout, cross=i % 2 == 0) for i in range(config.num_blocks)
        )
        self.final_norm = nn.LayerNorm(h)
        self.output_projection = nn.Linear(h, config.output_size)

    def forward(self, states: torch.Tensor, valid: torch.Tensor) -> MFormerOutput:
        """Prefix vectors for ID states ``[B, T, id_size]`` whose real positions are ``valid [B, T]``."""
        batch, k = states.shape[0], self.config.top_k
        routing = route(self.router(states), valid, k)
        # Each chosen expert's queries run as their own row, against a repeat of the user's states.
        x = self.queries[routing.experts].flatten(0, 1)  # [B*k, L, h]
        memory = self.memory_projection(states).repeat_interleave(k, dim=0)
        padding = (~valid).repeat_interleave(k, dim=0)
        for block in self.blocks:
            x = block(x, memory, padding)
        x = self.final_norm(x).view(batch, k, self.config.n_query_tokens, -1)
        mixed = (routing.gates.unsqueeze(-1).unsqueeze(-1) * x).sum(1)
        return MFormerOutput(self.output_projection(mixed), load_balance_loss(routing), routing)


__all__ = ["MFormer", "MFormerConfig", "MFormerSettings", "MFormerOutput", "Routing", "load_balance_loss", "route"]
