"""Bi-Tuning's inputs and its recommender view: prompts as token ids, users scored in length-bucketed
batches, and ``BiTuningRanker``, a trained ``BiTuning`` with its prompts as a full ranker
(``models.recommender``).

A prompt is token ids assembled from pieces tokenized once (``Prompts``); an item slot may hold the
negative item id (``-item_idx``), which ``BiTuning`` replaces by the item's aligned ID embedding.
Users are encoded in length-bucketed batches (``length_buckets``), so little of a batch is padding;
the bucketing is part of the numbers (a batch's padding changes float results in the last bits), so
the ranker scores all the users it is given in one bucketing, as training validates.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Annotated

import torch
from annotated_types import Ge, MinLen
from pydantic import ConfigDict
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from llm_seqrec.data.fingerprint import scorer_fingerprint
from llm_seqrec.data.padding import left_pad, right_pad
from llm_seqrec.models.recommender import Queries

if TYPE_CHECKING:
    from llm_seqrec.models.bituning import BiTuning


@dataclass(frozen=True)
class PromptConfig:
    """How users and items become token ids (``laser.prompts`` in the parameters, validated there too);
    stored with the adapter so scoring rebuilds the same prompts. A user is intro + [summary] + recent
    items + question, an item intro + title; each is followed by its trainable suffix token(s)."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    max_history_items: Annotated[int, Ge(1)] = 5  # most recent items shown in the user prompt
    max_item_tokens: Annotated[int, Ge(1)] = 10  # tokens of an item's title in any prompt
    max_summary_tokens: Annotated[int, Ge(1)] = 64  # with use_summary
    user_intro: Annotated[str, MinLen(1)] = "Items a user chose, oldest first:"
    summary_intro: Annotated[str, MinLen(1)] = "The user's preferences:"
    user_question: Annotated[str, MinLen(1)] = "The item the user will choose next:"
    item_intro: Annotated[str, MinLen(1)] = "Item:"
    # RA-Rec's aligned item embeddings (aligned_item_embeddings, from the alignment stage) as a soft
    # token (an -item_idx slot) before each item's title, in user and item prompts.
    aligned_id_tokens: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PromptConfig":
        return cls(**data)


class Prompts:
    """Token ids of user and item prompts, assembled from pieces tokenized once.

    Each title is tokenized once and cut to ``max_item_tokens``; a prompt is the concatenation of its
    pieces' ids (one item per line), so building thousands of prompts needs no further tokenizer calls.
    """

    def __init__(self, config: PromptConfig, tokenizer: PreTrainedTokenizerBase, titles: Mapping[int, str]) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.n_items = max(titles, default=0)
        self._encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
        # A leading space, so that a title's first word is tokenized as a word and not as a word piece.
        flat = [" " + " ".join(str(titles.get(i, "")).split()) for i in range(1, self.n_items + 1)]
        encoded = tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else []
        self.titles = [[]] + [ids[: config.max_item_tokens] for ids in encoded]
        self.bullet = self._encode("\n-")
        self.user_intro = self._encode(config.user_intro)
        self.summary_intro = self._encode("\n" + config.summary_intro)
        self.user_question = self._encode("\n" + config.user_question)
        self.item_intro = self._encode(config.item_intro)

    def user(self, history: Sequence[int], summary: str | None = None) -> list[int]:
        """Intro, the summary (if any), the ``max_history_items`` most recent items, the question."""
        ids = list(self.user_intro)
        if summary:
            ids += self.summary_intro + self._encode(" " + " ".join(summary.split()))[: self.config.max_summary_tokens]
        for item in list(history)[-self.config.max_history_items :]:
            ids += self.bullet + self._title(int(item))
        return ids + self.user_question

    def item(self, item: int) -> list[int]:
        return self.item_intro + self._title(int(item))

    def _title(self, item: int) -> list[int]:
        return ([-item] if self.config.aligned_id_tokens else []) + self.titles[item]

    def items(self) -> list[list[int]]:
        """Every item's prompt, indexed by item_idx (index 0, padding, is empty)."""
        return [[]] + [self.item(i) for i in range(1, self.n_items + 1)]

    def users(self, queries: Queries, use_summary: bool) -> list[list[int]]:
        """Each query's user prompt; with ``use_summary`` each user must have a summary at the cutoff."""
        if not use_summary:
            return [self.user(items) for items in queries.histories]
        missing = [u for r, u in enumerate(queries.users) if queries.summary(r) is None]
        if missing:
            raise ValueError(
                f"use_summary is on (laser or fusion) but user_summaries has no {queries.cutoff!r} summary for "
                f"{len(missing)} users (e.g. {missing[:5]}): run `kedro run --pipelines=summarization` with the same "
                "evaluation settings"
            )
        return [self.user(items, queries.summary(r)) for r, items in enumerate(queries.histories)]


def collate_users(
    prompts: Sequence[Sequence[int]], histories: Sequence[Sequence[int]], id_max_len: int | None
) -> dict[str, torch.Tensor]:
    """A batch for ``BiTuning.encode_users``: prompt ids and lengths, and (with an ID model) the
    histories left-padded to ``id_max_len`` for the ID model."""
    tokens, lengths = right_pad(prompts)
    batch = {"prompt": tokens, "length": lengths}
    if id_max_len is not None:
        batch["history"] = left_pad(histories, id_max_len)
    return batch


def length_buckets(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Row indices in batches of similar length (longest first), so little of a batch is padding."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


@torch.no_grad()
def score_users(net: BiTuning, prompts: Sequence[Sequence[int]], histories: Sequence[Sequence[int]], batch_size: int,
                progress: bool = False) -> torch.Tensor:
    """Scores ``[N, n_items + 1]`` (CPU) of users given as prompt ids and item histories, computed in
    length-bucketed batches and returned in the given order."""
    out = torch.empty(len(prompts), net.config.n_items + 1)
    for rows, batch in _user_batches(net, prompts, histories, batch_size, progress):
        out[rows] = net(**batch).cpu()
    return out


@torch.no_grad()
def score_candidates(net: BiTuning, prompts: Sequence[Sequence[int]], histories: Sequence[Sequence[int]],
                     candidates: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``candidate_logits`` ``[N, C]`` (CPU) of users given as prompt ids and item histories, each with
    its candidates (a row of ``candidates [N, C]``), from the cached item encodings."""
    out = torch.empty(candidates.shape)
    for rows, batch in _user_batches(net, prompts, histories, batch_size):
        vectors = net.encode_users(**batch).vectors
        out[rows] = net.candidate_logits(vectors, candidates[rows].to(vectors.device)).cpu()
    return out


def _user_batches(net: BiTuning, prompts: Sequence[Sequence[int]], histories: Sequence[Sequence[int]], batch_size: int,
                  progress: bool = False) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """Length-bucketed ``encode_users`` batches on the model's device, with their row indices."""
    id_max_len = net.frozen.id_model.config.max_len if net.mformer is not None else None
    device = net.user_suffix.device
    for rows in tqdm(length_buckets([len(p) for p in prompts], batch_size), desc="encoding users", leave=False,
                     disable=not progress):
        batch = collate_users([prompts[r] for r in rows], [histories[r] for r in rows], id_max_len)
        yield rows, {k: v.to(device) for k, v in batch.items()}


@dataclass
class BiTuningRanker:
    """A ``BiTuning`` and its prompts as a ``FullRanker``: each call makes sure the item encodings are
    those of the current weights (``refresh_items``, a no-op when they are), then scores the queries'
    users in length-bucketed batches of ``batch_size``, all of the call's users in one bucketing."""

    net: BiTuning
    prompts: Prompts
    use_summary: bool  # the user prompts carry the users' summaries (each query must have one)
    backbone_dtype: str
    batch_size: int = 16  # users per no-grad LLM pass
    item_batch_size: int = 64  # items per no-grad LLM pass when the catalogue is re-encoded
    progress: bool = False

    def score_all(self, queries: Queries) -> torch.Tensor:
        self.net.refresh_items(self.item_batch_size, progress=self.progress)
        return score_users(self.net, self.prompts.users(queries, self.use_summary), queries.histories, self.batch_size,
                           progress=self.progress)

    def fingerprint(self) -> str:
        """The frozen LLM by name (``BiTuningConfig.backbone``) and dtype, the trainable weights, the frozen
        ID model's and aligned embeddings' identity, every prompt's token ids and settings, and both batch
        sizes (the bucketing moves the last bits)."""
        id_model = self.net.frozen.id_model
        return scorer_fingerprint(
            "BiTuningRanker", dtype=self.backbone_dtype, config=self.net.config.to_dict(), weights=self.net.state_dict(),
            id_model=id_model.fingerprint() if id_model is not None else None, aligned_items=self.net.frozen.aligned_items,
            item_prompts=self.net.item_prompts, prompts=self.prompts.config.to_dict(), titles=self.prompts.titles,
            use_summary=self.use_summary, batch_size=self.batch_size, item_batch_size=self.item_batch_size,
        )


__all__ = ["BiTuningRanker", "PromptConfig", "Prompts", "collate_users", "length_buckets", "score_candidates", "score_users"]
