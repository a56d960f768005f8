"""SASRec (Kang & McAuley, ICDM 2018): a causal transformer over a user's item sequence.

Sequences are left-padded with item 0, so the most recent item is always the last column. Positions
are counted back from the most recent item, which makes every state independent of how much padding
precedes the sequence (a batch may be cut to its longest member). Inside ``forward`` each row is
rotated so that its items come first and its padding last: plain causal attention (``is_causal``, no
mask tensor) then keeps every item's state off the padding, and the states are rotated back. Output
scores use the item embedding table itself (tied, ``item_vectors``), so an item's ID embedding and its
output vector are one and the same.
As a ``FullRanker`` it scores every item for users' histories (their last ``max_len`` items).

``SASRecArchitecture`` is the model's shape, defined once: ``SASRecConfig`` adds the catalogue size
it is built for, and the ``sasrec`` parameter section (``training.id_model.SASRecSettings``) adds the
training settings.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Lt
from pydantic import ConfigDict
from torch import nn

from llm_seqrec.data.fingerprint import scorer_fingerprint
from llm_seqrec.data.padding import left_pad
from llm_seqrec.data.schema import PAD
from llm_seqrec.models.losses import linear_cross_entropy
from llm_seqrec.models.recommender import Queries


@dataclass(frozen=True)
class SASRecArchitecture:
    """The model's shape (the ``Annotated`` bounds are pydantic's, when a parameter section holds it)."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    max_len: Annotated[int, Ge(1)] = 200
    hidden_size: Annotated[int, Ge(8)] = 64
    num_blocks: Annotated[int, Ge(1)] = 2
    num_heads: Annotated[int, Ge(1)] = 1
    dropout: Annotated[float, Ge(0), Lt(1)] = 0.2
    # Dropout on attention probabilities. Off by default: on CPU it forces attention off the fused
    # kernel and costs about 40% of a training step at max_len 200.
    attention_dropout: Annotated[float, Ge(0), Lt(1)] = 0.0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")

    def architecture(self) -> dict:
        """The shape's fields alone (a subclass's other settings left out)."""
        return {name: getattr(self, name) for name in SASRecArchitecture.__dataclass_fields__}


@dataclass(frozen=True, kw_only=True)
class SASRecConfig(SASRecArchitecture):
    n_items: int  # items are 1..n_items; 0 is padding

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SASRecConfig":
        return cls(**data)


class Dropout(nn.Dropout):
    """``nn.Dropout`` with its keep mask drawn as random 31-bit integers against p·2³¹: the same
    Bernoulli(1 - p) mask (to 2⁻³¹; ``F.dropout`` draws float32, to 2⁻²⁴) from another random stream,
    1.6x faster forward and backward on CPU, where ``bernoulli_`` was a quarter of a training step."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.empty_like(x, dtype=torch.int32).random_() >= int(self.p * 2**31)
        return x * keep * (1 / (1 - self.p))


class CausalSelfAttention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.num_heads, hidden // self.num_heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(attended.transpose(1, 2).reshape(batch, length, hidden))


class Block(nn.Module):
    """Pre-LN transformer block: x + attention(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float, attention_dropout: float) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden_size)
        self.attention = CausalSelfAttention(hidden_size, num_heads, attention_dropout)
        self.ffn_norm = nn.LayerNorm(hidden_size)
        self.ffn = nn.Sequential(
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(),
            Dropout(dropout),
            nn.Linear(hidden_size, hidden_size),
        )
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.attention_norm(x)))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class SASRec(nn.Module):
    backbone_dtype = ""  # no LLM

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.config = config
        d = config.hidden_size
        self.item_embedding = nn.Embedding(config.n_items + 1, d, padding_idx=PAD)
        self.position_embedding = nn.Embedding(config.max_len, d)
        self.embedding_dropout = Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(d, config.num_heads, config.dropout, config.attention_dropout) for _ in range(config.num_blocks)
        )
        self.final_norm = nn.LayerNorm(d)
        # Xavier-normal on every matrix, as the reference implementation: with tied output embeddings,
        # nn.Embedding's N(0, 1) start would give huge initial logits over thousands of items.
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
        with torch.no_grad():
            self.item_embedding.weight[PAD].zero_()

    def forward(self, item_seq: torch.Tensor) -> torch.Tensor:
        """States ``[B, L, d]`` for left-padded ``item_seq [B, L]``; padding positions come out as 0."""
        length = item_seq.shape[1]
        if length > self.config.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len={self.config.max_len}")
        # Each row rotated left by its padding: items first (oldest to newest), padding last, so causal
        # attention alone keeps items off padding; padding positions are zeroed and their states unused.
        columns = torch.arange(length, device=item_seq.device)
        n_real = (item_seq != PAD).sum(1, keepdim=True)
        shift = length - n_real
        item_seq = item_seq.gather(1, (columns + shift) % length)
        valid = columns < n_real
        positions = (n_real - 1 - columns).clamp_(min=0)  # counted back from the most recent item
        x = F.embedding(item_seq, self.item_vectors(), padding_idx=PAD) * math.sqrt(self.config.hidden_size) \
            + self.position_embedding(positions)
        x = self.embedding_dropout(x * valid.unsqueeze(-1))
        for block in self.blocks:
            x = block(x)
        x = self.final_norm(x) * valid.unsqueeze(-1)
        return x.gather(1, ((columns - shift) % length).unsqueeze(-1).expand_as(x))

    def user_state(self, item_seq: torch.Tensor) -> torch.Tensor:
        """The state after the most recent item (last column), ``[B, d]``: the user's next-item query."""
        return self.forward(item_seq)[:, -1]

    def item_vectors(self) -> torch.Tensor:
        """Every item's representation ``[n_items + 1, d]`` (row = item id, tied: input and output side)."""
        return self.item_embedding.weight

    def score_items(self, state: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, n_items + 1]`` of every item for ``state [B, d]``; column = item id, pad column -inf."""
        scores = state @ self.item_vectors().T
        scores[:, PAD] = float("-inf")
        return scores

    @property
    def device(self) -> torch.device:
        return self.item_embedding.weight.device

    def score_all(self, queries: Queries) -> torch.Tensor:
        """Every item's score ``[n, n_items + 1]`` for the queries' histories, on the model's device."""
        return self.score_items(self.user_state(left_pad(queries.histories, self.config.max_len).to(self.device)))

    def fingerprint(self) -> str:
        """Its shape and weights (a small model: hashing them is cheap)."""
        return scorer_fingerprint("SASRec", config=self.config.to_dict(), weights=self.state_dict())

    def loss(self, item_seq: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor | None = None,
             matmul_dtype: torch.dtype | None = None) -> torch.Tensor:
        """Next-item cross-entropy over every item at each position whose target is not padding: those
        positions are gathered first, then scored against the item table chunk by chunk
        (``linear_cross_entropy``), so the ``[batch, length, items]`` logits are never formed.

        With ``negatives`` (item ids ``[S]``, shared by the batch) it is sampled softmax against those
        instead of all items; a negative that equals a position's target is masked out there.
        ``matmul_dtype`` is ``linear_cross_entropy``'s (the full cross-entropy's matmuls alone in bf16).
        """
        keep = targets != PAD
        hidden = self.forward(item_seq)[keep]
        targets = targets[keep]
        items = self.item_vectors()
        if negatives is None:
            return linear_cross_entropy(hidden, items[1:], targets - 1, matmul_dtype=matmul_dtype)
        positive = (hidden * F.embedding(targets, items)).sum(-1, keepdim=True)
        negative = hidden @ F.embedding(negatives, items).T
        negative = negative.masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))
        logits = torch.cat([positive, negative], dim=1)
        return F.cross_entropy(logits, torch.zeros_like(targets))

    def to_artifact(self) -> dict:
        """``{"config", "state_dict"}`` for ``TorchWeightsDataset``: plain JSON and CPU tensors."""
        return {"config": self.config.to_dict(), "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}

    @classmethod
    def from_artifact(cls, artifact: dict) -> "SASRec":
        model = cls(SASRecConfig.from_dict(artifact["config"]))
        model.load_state_dict(artifact["state_dict"])
        return model

