"""The sections of the LLM stages but Bi-Tuning: ``summarization``, ``alignment`` (RA-Rec), ``trsr``, ``dmpo``
and ``dmpo_transfer``."""

from __future__ import annotations

import string
from typing import Literal

from pydantic import Field, field_validator, model_validator

from llm_seqrec.llm.backbone import SectionDepth
from llm_seqrec.llm.generation import GenerationSettings
from llm_seqrec.models.llm_recommender import (
    LoraSettings,
    PromptBatch,
    PromptSettings,
    RecentItems,
    RecommenderConfig,
    SummaryTokens,
)
from llm_seqrec.params.base import Strict
from llm_seqrec.params.data import DatasetParams
from llm_seqrec.training.alignment import AlignmentConfig
from llm_seqrec.training.config import TrainingConfig


class SummaryTemplatesParams(Strict):
    """LLM-TRSR's prompts (``summarization.templates``): user turns, sent in the model's chat template.

    The defaults hold where no configuration sets a key (tests build sections in code);
    conf/base/parameters_summarization.yml spells them out for editing.
    """

    system: str = "You summarise a shopper's preferences from the items they chose. Answer in two or three sentences."
    block: str = "Here are items a user chose, oldest first:\n{items}\nSummarise this user's preferences."
    merge: str = (
        "Here are summaries of one user's preferences over successive periods, oldest first:\n{summaries}\n"
        "Combine them into one summary of the user's preferences."
    )
    update: str = (
        "Summary of a user's preferences so far:\n{summary}\nItems the user chose next, oldest first:\n{items}\n"
        "Update the summary with the new items."
    )

    @model_validator(mode="after")
    def _placeholders(self) -> "SummaryTemplatesParams":
        wanted = {"system": set(), "block": {"items"}, "merge": {"summaries"}, "update": {"summary", "items"}}
        for name, fields in wanted.items():
            found = {f for _, f, _, _ in string.Formatter().parse(getattr(self, name)) if f is not None}
            if found != fields:
                raise ValueError(
                    f"summarization.templates.{name} must use the placeholders {sorted(fields)} and no others "
                    f"(found {sorted(found)}; write a literal brace as {{{{ or }}}})"
                )
        return self


class SummarizationParams(Strict):
    """LLM-TRSR's history summaries (``summarization.*``)."""

    method: Literal["hierarchical", "recurrent"] = "hierarchical"
    # It generates text, which the first N layers alone cannot write: every layer, whatever backbone.layers says.
    layers: SectionDepth = "all"
    block_size: int = Field(5, ge=1)
    max_blocks: int = Field(4, ge=1)  # the most recent blocks kept
    item_tokens: int = Field(48, ge=4)  # tokens of an item's text shown in a prompt
    train_users: int | None = Field(200, ge=0)  # seeded users summarised at the train cutoff; None = all
    seed: int = 42
    chunk_size: int = Field(64, ge=1)  # summaries per persisted cache part
    progress: bool = True
    prompt_version: str = Field("v1", min_length=1)
    templates: SummaryTemplatesParams = SummaryTemplatesParams()
    # Decoding (``summarization.generation``). SmolLM2-135M's greedy summaries loop ("a variety of
    # products, including a variety of ..."); banning repeated 3-grams keeps them on the items and stays
    # deterministic.
    generation: GenerationSettings = GenerationSettings(no_repeat_ngram_size=3)


# The ``alignment`` section (RA-Rec), defined once in the library.
AlignmentParams = AlignmentConfig


class TRSRParams(Strict):
    """LLM-TRSR's LoRA yes/no recommender and its no-summary ablation (``trsr.*``)."""

    layers: SectionDepth = None  # the backbone's depth (N, all, None = backbone.layers); adapters record it
    recent_items: RecentItems = PromptSettings.recent_items  # titles shown before the candidate (paper: 3)
    summary_tokens: SummaryTokens = PromptSettings.summary_tokens  # a summary is cut to this many tokens in the prompt
    train_users: int | None = Field(None, ge=1)  # of the users with a train-cutoff summary; None = all
    negatives: int = Field(1, ge=1)  # random negatives per positive, drawn afresh each epoch (paper: 1:1)
    seed: int = 42  # order of the training users
    prompt_batch: PromptBatch = PromptBatch()  # prompts per forward: {train, score}
    lora: LoraSettings = LoraSettings()
    training: TrainingConfig = TrainingConfig(epochs=2, batch_size=8, lr=3e-3, patience=1, eval_users=32)


class DMPOParams(Strict):
    """SFT, then DMPO / S-DPO preference optimisation of a LoRA title-likelihood recommender (``dmpo.*``)."""

    layers: SectionDepth = None  # the backbone's depth (N, all, None = backbone.layers); adapters record it
    train_users: int = Field(256, ge=1)  # training users of sft, dmpo and sdpo (summarised users first)
    few_shot_users: list[int] = []  # sweep: an SFT + DMPO model per size (nested user sets); [] = none
    recent_items: RecentItems = 5
    use_summary: bool = PromptSettings.use_summary  # show the user's summary where the summary cache has one
    summary_tokens: SummaryTokens = PromptSettings.summary_tokens
    negatives: int = Field(3, ge=1)  # k negatives per positive, sampled once (reference log-probs are cached)
    beta: float = Field(1.0, gt=0)
    sft_weight: float = Field(0.0, ge=0)  # weight of the positive's SFT loss added to the preference loss
    length_normalize: bool = RecommenderConfig.length_normalize  # rank candidates by title log-likelihood per token
    train_dataset: DatasetParams | None = None  # set in dmpo_transfer only: the data set trained on
    seed: int = 42  # order of the training users and the negatives
    prompt_batch: PromptBatch = PromptBatch()  # prompts per forward: {train, score}
    lora: LoraSettings = LoraSettings()
    sft: TrainingConfig = TrainingConfig(epochs=1, batch_size=8, lr=5e-4, eval_every=2)
    preference: TrainingConfig = TrainingConfig(epochs=1, batch_size=8, lr=1e-3, eval_every=2)

    @field_validator("few_shot_users")
    def _sizes(cls, sizes: list[int]) -> list[int]:
        if any(n < 1 for n in sizes):
            raise ValueError("dmpo.few_shot_users must be positive user counts, e.g. [64, 256, 1024]")
        return sorted(set(sizes))


class DMPOTransferParams(DMPOParams):
    """Cross-domain DMPO (``dmpo_transfer.*``): ``dmpo``'s models trained on ``train_dataset`` and
    evaluated on ``dataset``, reported beside the in-domain ones as ``<model>_from_<train data set>``."""

    train_dataset: DatasetParams

    @field_validator("few_shot_users")
    def _no_sweep(cls, sizes: list[int]) -> list[int]:
        if sizes:
            raise ValueError("dmpo_transfer.few_shot_users must be []: the few-shot sweep is dmpo's (in-domain)")
        return sizes
