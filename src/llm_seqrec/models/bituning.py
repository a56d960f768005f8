"""Bi-Tuning (Laser, Zhang et al. 2024): a frozen LLM as user and item encoder, tuned by virtual tokens.

A user is ``[prefix] + prompt + [user suffix]`` and an item ``prompt + [item suffix]``, fed to the frozen
LLM as input embeddings. The prefix is the M-Former's reading of the frozen ID model's per-position
states (optional); the suffix tokens are trainable embeddings. The LLM's last hidden state at the final
suffix position goes through a projection (one per side) into the recommendation space, where users and
items meet by cosine similarity. Only the M-Former, the suffix tokens and the two projections train; the
LLM and the ID model are held outside the module's registered children, so ``state_dict()``,
``parameters()`` and ``train()`` see the trainable parts only (a checkpoint is a few MB, and the frozen
models' dropout stays off).

Training is contrastive over all items (temperature-scaled cosine, cross-entropy). Encoding the whole
catalogue with gradients is out of reach, so item encodings come from a no-grad cache that
``refresh_items`` rebuilds when the item side has changed. Stage 1 (item side trainable) re-encodes the
batch's target items with gradients and uses the cache for every other item, the cache being refreshed
once per epoch; stage 2 freezes the item side, so one cache serves every step.

Users are scored in length-bucketed batches by ``bituning_prompts.score_users``, which also holds the
prompts and ``BiTuningRanker``, the model as a ``FullRanker``. Vocabulary logits are never computed: the decoder (``get_decoder()``) runs without the LM head, and only
the suffix position's state goes into the projection.

After stage 2, ``preference_loss`` tunes the same trainable parts with a preference loss (DMPO or
S-DPO) on the candidate head: one positive against k sampled negatives, rewards measured against the
frozen stage-2 model's logits, the item encodings still frozen.

Optionally each item in a prompt also carries a soft token: its ID embedding already aligned into the
LLM's input space by RA-Rec (``aligned_items``, frozen). A prompt marks that slot with the negative
item id (``-item_idx``), which the input embedding replaces by the item's aligned vector.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from llm_seqrec.data.padding import right_pad
from llm_seqrec.data.schema import PAD
from llm_seqrec.llm.backbone import check_backbone
from llm_seqrec.models.bituning_prompts import length_buckets
from llm_seqrec.models.mformer import MFormer, MFormerConfig


@dataclass(frozen=True)
class BiTuningConfig:
    n_items: int  # items 1..n_items; 0 is padding
    llm_hidden_size: int
    backbone: str  # identity of the frozen LLM (``Backbone.name``), checked when an adapter is loaded
    rec_size: int = 128
    n_suffix_tokens: int = 1
    temperature: float = 0.05
    balance_weight: float = 0.01
    mformer: MFormerConfig | None = None  # None: no prefix, and no ID model
    aligned_id_tokens: bool = False  # prompts hold -item_idx slots for RA-Rec's aligned item embeddings

    def to_dict(self) -> dict:
        data = asdict(self)
        data["mformer"] = self.mformer.to_dict() if self.mformer is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "BiTuningConfig":
        mformer = MFormerConfig.from_dict(data["mformer"]) if data.get("mformer") is not None else None
        return cls(**{**data, "mformer": mformer})


@dataclass
class FrozenParts:
    """The frozen models a ``BiTuning`` computes with; deliberately not ``nn.Module`` children."""

    llm: PreTrainedModel
    id_model: nn.Module | None
    aligned_items: torch.Tensor | None  # [n_items + 1, llm hidden] RA-Rec's aligned item embeddings


class UserEncoding(NamedTuple):
    vectors: torch.Tensor  # [B, rec_size], unit length
    balance_loss: torch.Tensor  # scalar; 0 without an M-Former


class BiTuning(nn.Module):
    def __init__(self, config: BiTuningConfig, llm: PreTrainedModel, item_prompts: Sequence[Sequence[int]],
                 id_model: nn.Module | None = None, aligned_items: torch.Tensor | None = None) -> None:
        super().__init__()
        if (config.mformer is None) != (id_model is None):
            raise ValueError("an M-Former prefix needs the frozen ID model, and only it does")
        if config.aligned_id_tokens != (aligned_items is not None):
            raise ValueError("aligned ID tokens need the aligned item embeddings, and only they do")
        if aligned_items is not None and tuple(aligned_items.shape) != (config.n_items + 1, config.llm_hidden_size):
            raise ValueError(f"aligned item embeddings of shape {tuple(aligned_items.shape)}, expected "
                             f"({config.n_items + 1}, {config.llm_hidden_size}) with row 0 for padding")
        if len(item_prompts) != config.n_items + 1:
            raise ValueError(f"{len(item_prompts)} item prompts for {config.n_items} items (+ padding)")
        self.config = config
        table = llm.get_input_embeddings().weight
        self.frozen = FrozenParts(
            llm,
            id_model.eval().requires_grad_(False) if id_model is not None else None,
            aligned_items.detach().to(table.device, table.dtype) if aligned_items is not None else None,
        )
        self.item_prompts = [list(p) for p in item_prompts]
        self.mformer = MFormer(config.mformer) if config.mformer is not None else None
        if self.mformer is not None:
            # The M-Former's output is layer-normed (unit variance per dimension), so a projection with
            # Frobenius norm equal to a typical token embedding's norm makes prefix vectors (before
            # gating) start at the scale of real tokens instead of several times larger.
            projection = self.mformer.output_projection
            with torch.no_grad():
                projection.weight.mul_(table.float().norm(dim=1).mean() / projection.weight.norm())
                projection.bias.zero_()
        # Suffix tokens start as embeddings of random vocabulary tokens, so they begin at the scale of
        # real inputs (random normals would be far larger than SmolLM2's embeddings).
        start = table[torch.randint(0, table.shape[0], (2, config.n_suffix_tokens))].detach().float()
        self.user_suffix = nn.Parameter(start[0].clone())
        self.item_suffix = nn.Parameter(start[1].clone())
        self.user_projection = nn.Linear(config.llm_hidden_size, config.rec_size)
        self.item_projection = nn.Linear(config.llm_hidden_size, config.rec_size)
        self._item_cache: torch.Tensor | None = None
        self._item_cache_key: list[torch.Tensor] | None = None

    # ---------------------------------------------------------------- the two towers
    def _llm_state(self, tokens: torch.Tensor, lengths: torch.Tensor, prefix: torch.Tensor | None, suffix: torch.Tensor) -> torch.Tensor:
        """The decoder's last hidden state at the final suffix token of ``[prefix] + tokens + suffix``.

        ``tokens`` is right-padded, so real positions never attend to padding and positions count from
        0 as in an unpadded pass; the suffix is placed right after each row's real tokens.
        """
        llm = self.frozen.llm
        dtype = llm.get_input_embeddings().weight.dtype
        batch, n_suffix = tokens.shape[0], suffix.shape[0]
        parts = [self._embed(tokens)]
        n_prefix = 0
        if prefix is not None:
            parts.insert(0, prefix.to(dtype))
            n_prefix = prefix.shape[1]
        parts.append(torch.zeros(batch, n_suffix, parts[-1].shape[-1], dtype=dtype, device=tokens.device))
        x = torch.cat(parts, dim=1)
        position = torch.arange(x.shape[1], device=tokens.device)
        offset = position.unsqueeze(0) - (n_prefix + lengths).unsqueeze(1)  # suffix token index, where in 0..n_suffix-1
        is_suffix = (offset >= 0) & (offset < n_suffix)
        x = torch.where(is_suffix.unsqueeze(-1), suffix.to(dtype)[offset.clamp(0, n_suffix - 1)], x)
        end = n_prefix + lengths + n_suffix
        mask = (position.unsqueeze(0) < end.unsqueeze(1)).long()
        hidden = llm.get_decoder()(inputs_embeds=x, attention_mask=mask, use_cache=False).last_hidden_state
        return hidden[torch.arange(batch, device=tokens.device), end - 1].float()

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token embeddings, with ``-item_idx`` slots replaced by the items' aligned ID embeddings."""
        embedded = self.frozen.llm.get_input_embeddings()(tokens.clamp_min(0))
        soft = tokens < 0
        if self.frozen.aligned_items is None:
            if bool(soft.any()):
                raise ValueError("a prompt has aligned-ID slots (negative ids) but the model has no aligned embeddings")
            return embedded
        return torch.where(soft.unsqueeze(-1), self.frozen.aligned_items[(-tokens).clamp_min(0)], embedded)

    def encode_users(self, prompt: torch.Tensor, length: torch.Tensor, history: torch.Tensor | None = None) -> UserEncoding:
        """Users from right-padded prompt ids ``[B, P]`` and lengths ``[B]``, and (with the M-Former)
        their left-padded item histories ``[B, T]`` for the ID model."""
        prefix, balance = None, torch.zeros((), device=prompt.device)
        if self.mformer is not None:
            if history is None:
                raise ValueError("this model has an M-Former prefix: encode_users needs the users' histories")
            valid = history != PAD
            if not bool(valid.any(1).all()):
                raise ValueError("every user needs at least one history item for the M-Former")
            with torch.no_grad():
                states = self.frozen.id_model(history)
            out = self.mformer(states, valid)
            prefix, balance = out.prefix, out.balance_loss
        state = self._llm_state(prompt, length, prefix, self.user_suffix)
        return UserEncoding(F.normalize(self.user_projection(state), dim=-1), balance)

    def encode_items(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Unit vectors ``[n, rec_size]`` of items ``item_ids [n]``, from their prompts (one batch)."""
        tokens, lengths = right_pad([self.item_prompts[int(i)] for i in item_ids.tolist()])
        device = self.user_suffix.device
        state = self._llm_state(tokens.to(device), lengths.to(device), None, self.item_suffix)
        return F.normalize(self.item_projection(state), dim=-1)

    # ---------------------------------------------------------------- the item cache
    def _item_side(self) -> list[torch.Tensor]:
        return [self.item_suffix, *self.item_projection.parameters()]

    def refresh_items(self, batch_size: int = 64, progress: bool = False) -> torch.Tensor:
        """The item table ``[n_items + 1, rec_size]`` (row 0 zeros), re-encoded only if the item side
        changed since the cached one was made (or the model moved device)."""
        current = [p.detach() for p in self._item_side()]
        cached = self._item_cache_key
        if (
            self._item_cache is None
            or self._item_cache.device != current[0].device
            or not all(torch.equal(a, b) for a, b in zip(cached, current, strict=True))
        ):
            self._item_cache = self._encode_catalogue(batch_size, progress)
            self._item_cache_key = [p.clone() for p in current]
        return self._item_cache

    def item_table(self) -> torch.Tensor:
        """The cached item table as it is, encoded at first use: the training loss's view, deliberately
        stale within a stage-1 epoch (the batch's targets are re-encoded fresh instead)."""
        return self._item_cache if self._item_cache is not None else self.refresh_items()

    @torch.no_grad()
    def _encode_catalogue(self, batch_size: int, progress: bool) -> torch.Tensor:
        ids = torch.arange(1, self.config.n_items + 1)
        table = torch.zeros(self.config.n_items + 1, self.config.rec_size, device=self.user_suffix.device)
        batches = length_buckets([len(self.item_prompts[int(i)]) for i in ids], batch_size)
        for rows in tqdm(batches, desc="encoding items", leave=False, disable=not progress):
            chosen = ids[rows]
            table[chosen.to(table.device)] = self.encode_items(chosen)
        return table

    def set_item_side_trainable(self, trainable: bool) -> None:
        """Stage 1: True (the item suffix and projection learn); stage 2: False (item encodings frozen)."""
        for p in self._item_side():
            p.requires_grad_(trainable)

    # ---------------------------------------------------------------- scoring and training
    def forward(self, prompt: torch.Tensor, length: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
        """Cosine similarity ``[B, n_items + 1]`` of each user with every item; column 0 (padding) is -inf.
        Scores always use item encodings of the current weights (``refresh_items``), never a stale cache."""
        scores = self.encode_users(prompt, length, history).vectors @ self.refresh_items().T
        scores[:, PAD] = float("-inf")
        return scores

    def loss(self, prompt: torch.Tensor, length: torch.Tensor, target: torch.Tensor, history: torch.Tensor | None = None,
             negatives: torch.Tensor | None = None) -> torch.Tensor:
        """Contrastive loss over all items (temperature-scaled cosine, cross-entropy) plus the weighted
        load-balancing loss. While the item side trains, the targets' columns come from a fresh,
        differentiable encoding; every other item from the cache. With ``negatives`` (item ids), over the
        batch's targets and those items only, every column encoded fresh (stage 1's ``stage1_negatives``)."""
        users = self.encode_users(prompt, length, history)
        return self._contrastive(users.vectors, target, negatives) + self.config.balance_weight * users.balance_loss

    def _contrastive(self, vectors: torch.Tensor, target: torch.Tensor, negatives: torch.Tensor | None = None) -> torch.Tensor:
        if negatives is not None:  # a sampled softmax whose item side is pushed apart as well as pulled
            columns = torch.unique(torch.cat([target, negatives]))
            return F.cross_entropy(vectors @ self.encode_items(columns).T / self.config.temperature,
                                   torch.searchsorted(columns, target))
        logits = vectors @ self.item_table()[1:].T
        if self.item_suffix.requires_grad:
            fresh = torch.unique(target)
            logits = logits.index_copy(1, fresh - 1, vectors @ self.encode_items(fresh).T)
        return F.cross_entropy(logits / self.config.temperature, target - 1)

    def candidate_logits(self, vectors: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Temperature-scaled cosine ``[B, C]`` of unit user vectors ``[B, rec_size]`` with each user's
        candidates ``[B, C]`` (item ids), from the item cache."""
        return torch.einsum("bd,bcd->bc", vectors, self.item_table()[candidates]) / self.config.temperature

    def preference_loss(self, prompt: torch.Tensor, length: torch.Tensor, candidates: torch.Tensor, reference: torch.Tensor,
                        objective: Callable[..., torch.Tensor], beta: float, sft_weight: float = 0.0,
                        history: torch.Tensor | None = None) -> torch.Tensor:
        """A preference loss (``models.losses``: DMPO or S-DPO) on the candidate head, for preference
        tuning after stage 2. ``candidates [B, 1 + k]`` hold the positive first; ``reference [B, 1 + k]``
        their ``candidate_logits`` under the frozen starting model. The policy's log-probability of an
        item is its logit: the log-softmax over the catalogue would subtract the same normaliser from a
        user's positive and negatives, which cancels in every reward difference the losses take.
        ``sft_weight`` adds the contrastive loss over all items on the positive."""
        if self.item_suffix.requires_grad:
            raise ValueError("preference tuning keeps the item side frozen: call set_item_side_trainable(False) first")
        users = self.encode_users(prompt, length, history)
        logits = self.candidate_logits(users.vectors, candidates)
        loss = objective(logits[:, 0], logits[:, 1:], reference[:, 0], reference[:, 1:], beta)
        if sft_weight:
            loss = loss + sft_weight * self._contrastive(users.vectors, candidates[:, 0])
        return loss + self.config.balance_weight * users.balance_loss

    # ---------------------------------------------------------------- artifacts
    def n_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def to_artifact(self, **extra_config) -> dict:
        """``{"config", "state_dict"}`` for ``TorchWeightsDataset``: the trained weights only, and the
        model configuration beside ``extra_config`` (prompt settings, training log, ...)."""
        return {
            "config": {"model": self.config.to_dict(), **extra_config},
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }

    @classmethod
    def from_artifact(cls, artifact: dict, llm: PreTrainedModel, backbone_name: str, item_prompts: Sequence[Sequence[int]],
                      id_model: nn.Module | None = None, aligned_items: torch.Tensor | None = None) -> "BiTuning":
        config = BiTuningConfig.from_dict(artifact["config"]["model"])
        check_backbone(config.backbone, backbone_name, llm.config.num_hidden_layers)
        model = cls(config, llm, item_prompts, id_model if config.mformer is not None else None,
                    aligned_items if config.aligned_id_tokens else None)
        model.load_state_dict(artifact["state_dict"])
        return model.to(llm.device).eval()


__all__ = ["BiTuning", "BiTuningConfig", "FrozenParts", "UserEncoding"]
