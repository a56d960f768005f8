"""Nodes of the summarization stage: which histories, their summaries, and a leakage check."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from llm_seqrec.data.leakage import check_inputs_precede_targets
from llm_seqrec.data.schema import split_input
from llm_seqrec.datasets.summary_cache import SummaryCache
from llm_seqrec.evaluation.protocol import llm_user_sample
from llm_seqrec.llm.backbone import load_backbone
from llm_seqrec.llm.generation import generate_chat
from llm_seqrec.llm.summarize import Request, Templates, covered_items, history_blocks, item_lines, summarize
from llm_seqrec.params import BackboneParams, EvaluationParams, SummarizationParams

BLOCK_COLUMNS = ["user_idx", "cutoff", "history_length", "blocks"]


def _cutoff_input(train_items: list[int], valid_target: int, cutoff: str) -> list[int]:
    # ``train``: what the LoRA recommender trains on, the last training item being its target.
    return train_items[:-1] if cutoff == "train" else split_input(train_items, valid_target, cutoff)


def _train_user_sample(user_sequences: pd.DataFrame, n: int | None, seed: int) -> np.ndarray:
    """Seeded users with at least one training item before their last one (sorted user_idx)."""
    eligible = np.sort(user_sequences.loc[user_sequences["train_items"].map(len) >= 2, "user_idx"].to_numpy(np.int64))
    if n is None or n >= len(eligible):
        return eligible
    return np.sort(np.random.default_rng(seed).choice(eligible, size=n, replace=False))


def make_history_blocks(user_sequences: pd.DataFrame, summarization: dict, evaluation: dict) -> pd.DataFrame:
    """One row per (user, cutoff) to summarise: the LLM evaluation sample at valid and test, the
    seeded training users at train; ``history_length`` is the input's length (= the target's position)."""
    params = SummarizationParams.model_validate(summarization)
    eval_params = EvaluationParams.model_validate(evaluation)
    sample = llm_user_sample(user_sequences, eval_params.llm_user_sample, eval_params.seed)
    cutoffs_of = {int(u): ["valid", "test"] for u in sample}
    for u in _train_user_sample(user_sequences, params.train_users, params.seed):
        cutoffs_of.setdefault(int(u), []).insert(0, "train")
    rows = []
    columns = (user_sequences[c] for c in ("user_idx", "train_items", "valid_target"))
    for user, train, valid in zip(*columns, strict=True):
        for cutoff in cutoffs_of.get(int(user), []):
            items = [int(i) for i in _cutoff_input(list(train), int(valid), cutoff)]
            rows.append((int(user), cutoff, len(items), history_blocks(items, params.block_size, params.max_blocks)))
    frame = pd.DataFrame(rows, columns=BLOCK_COLUMNS)
    frame["user_idx"] = frame["user_idx"].astype(np.int64)
    frame["history_length"] = frame["history_length"].astype(np.int64)
    return frame


def summarize_histories(
    blocks: pd.DataFrame, item_catalog: pd.DataFrame, summary_cache: SummaryCache, summarization: dict, backbone: dict
) -> pd.DataFrame:
    """Every row's final summary; new summaries go to ``summary_cache`` chunk by chunk as they finish."""
    params = SummarizationParams.model_validate(summarization)
    llm = load_backbone(**BackboneParams.model_validate(backbone).loader_kwargs(params.layers))
    requests = [
        Request(int(u), c, tuple(tuple(int(i) for i in block) for block in user_blocks))
        for u, c, user_blocks in zip(blocks["user_idx"], blocks["cutoff"], blocks["blocks"], strict=True)
    ]
    shown = {i for r in requests for block in r.blocks for i in block}
    texts = item_catalog.set_index("item_idx")["text"]
    templates = Templates(version=params.prompt_version, **params.templates.model_dump())
    settings = params.generation
    return summarize(
        requests,
        method=params.method,
        templates=templates,
        lines=item_lines({i: texts[i] for i in sorted(shown)}, llm.tokenizer, params.item_tokens),
        generate_fn=functools.partial(generate_chat, llm, settings=settings, system=templates.system),
        model=llm.name,
        # bf16 and float32 decode to different texts: each dtype has its own cache entries.
        generation={**settings.identity(), "dtype": llm.dtype_name},
        known=summary_cache.summaries(),
        on_chunk=summary_cache.append,
        chunk_size=params.chunk_size,
        progress=params.progress,
    )


def check_no_leakage(
    summaries: pd.DataFrame, summary_cache: SummaryCache, user_sequences: pd.DataFrame
) -> pd.DataFrame:
    """``summaries`` unchanged, if every summary was made from exactly the items just before its
    cutoff's target; else the run fails."""
    cache = summary_cache.to_frame()
    item_ids = dict(zip(cache["key"], cache["item_ids"], strict=True))
    input_keys = dict(zip(cache["key"], cache["input_keys"], strict=True))
    check_inputs_precede_targets(
        user_sequences, summaries["user_idx"], summaries["cutoff"],
        [covered_items(key, item_ids, input_keys) for key in summaries["key"]],
        what="user_summaries (the items each summary was made from)",
    )
    return summaries
