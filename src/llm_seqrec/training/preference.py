"""Preference optimisation of the LoRA title-likelihood recommender (DMPO, S-DPO) from its SFT state.

πref is the SFT adapter: ``reference_logprobs`` computes its answer log-probabilities once, and
``fit_preference`` reads that cache instead of running a frozen copy at every step. The cache is
persisted as a table (``reference_table``) tagged with the SFT adapter's weights fingerprint, and
``read_reference`` refuses a table made from other weights or examples. No Kedro here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from llm_seqrec.data.negatives import sample_negatives
from llm_seqrec.models.llm_recommender import LLMRecommender
from llm_seqrec.models.losses import PREFERENCE_LOSSES
from llm_seqrec.training.config import TrainingConfig
from llm_seqrec.training.lora import Example, cutoff_examples, prompts, shuffled_batches
from llm_seqrec.training.loop import FitResult, fit

EXAMPLE_COLUMNS = ["user_idx", "domain", "history", "target", "negatives", "summary"]
REFERENCE_COLUMNS = ["user_idx", "items", "logprob", "sft_adapter"]
REFERENCE_CHUNK = 32  # examples per progress step of reference_logprobs


def preference_examples(
    user_sequences: pd.DataFrame, item_catalog: pd.DataFrame, summaries: Mapping[int, str], n_users: int, seed: int,
    recent_items: int, negatives: int, domain: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training-examples table (one row per training user, in training-set order; ``history``
    holds the ``recent_items`` item ids the prompt shows; ``negatives`` drawn once, seeded, outside the
    user's training items) and the titles of the items it names."""
    examples = cutoff_examples(user_sequences, summaries, n_users, seed, what=f"preference training examples ({domain})")
    generator = torch.Generator().manual_seed(seed)
    n_items = int(item_catalog["item_idx"].max())
    rows = [
        (ex.user_idx, domain, list(ex.history[-recent_items:]), ex.target,
         list(sample_negatives(n_items, {*ex.history, ex.target}, negatives, generator)), ex.summary)
        for ex in examples
    ]
    table = pd.DataFrame(rows, columns=EXAMPLE_COLUMNS)
    used = {i for h, t, n in zip(table["history"], table["target"], table["negatives"], strict=True) for i in (*h, t, *n)}
    items = item_catalog.loc[item_catalog["item_idx"].isin(used), ["item_idx", "title"]].reset_index(drop=True)
    return table, items


def table_examples(training_examples: pd.DataFrame, n: int) -> list[Example]:
    """The first ``n`` rows of a ``preference_examples`` table as ``Example``s."""
    rows = training_examples[["user_idx", "history", "target", "negatives", "summary"]].head(n)
    return [
        Example(int(u), tuple(int(i) for i in h), int(t), s if isinstance(s, str) else None, tuple(int(i) for i in neg))
        for u, h, t, neg, s in rows.itertuples(index=False)
    ]


@torch.no_grad()
def reference_logprobs(
    model: LLMRecommender, examples: Sequence[Example], titles: Mapping[int, str], progress: bool = False
) -> torch.Tensor:
    """``[N, 1 + k]`` summed answer log-probabilities of each example's positive then its fixed
    negatives under ``model`` as it is now, in eval mode (no dropout). Computed once from the SFT
    adapter, before preference training changes it, this is πref: the cache replaces the frozen
    copy that recomputing the reference at every step would need. ``model.prompt_batch.train`` prompts
    per forward (the training steps' grouping), by length within each ``REFERENCE_CHUNK`` examples."""
    was_training = model.training
    model.eval()
    texts = prompts(model, examples, titles)
    candidates = [[model.candidate_ids(titles[i]) for i in (ex.target, *ex.negatives)] for ex in examples]
    out = []
    for start in tqdm(range(0, len(examples), REFERENCE_CHUNK), desc="reference log-probs", disable=not progress):
        chunk = slice(start, start + REFERENCE_CHUNK)
        values = model.grouped_forward(texts[chunk], candidates[chunk], model.prompt_batch.train)
        out += [value.float().cpu() for value in values]
    model.train(was_training)
    return torch.stack(out)


def reference_table(examples: Sequence[Example], reference: torch.Tensor, fingerprint: str) -> pd.DataFrame:
    """The cache as a table: per example its items (positive first), their log-probs and the SFT
    adapter's fingerprint."""
    return pd.DataFrame(
        [
            (ex.user_idx, [ex.target, *ex.negatives], values, fingerprint)
            for ex, values in zip(examples, reference.double().tolist(), strict=True)
        ],
        columns=REFERENCE_COLUMNS,
    )


def read_reference(table: pd.DataFrame, examples: Sequence[Example], fingerprint: str) -> torch.Tensor:
    """``reference_table``'s log-probs (float32), once it shows the same examples and SFT adapter."""
    expected = [(ex.user_idx, [ex.target, *ex.negatives], fingerprint) for ex in examples]
    found = [
        (int(u), [int(i) for i in items], f) for u, items, f in table[["user_idx", "items", "sft_adapter"]].itertuples(index=False)
    ]
    if found != expected:
        raise ValueError(
            "dmpo.reference_logprobs was not computed from this SFT adapter and these examples: "
            "re-run the node dmpo.compute_reference_logprobs"
        )
    return torch.tensor(np.stack(table["logprob"].to_numpy()), dtype=torch.float32)


def fit_preference(
    model: LLMRecommender,
    examples: Sequence[Example],
    titles: Mapping[int, str],
    reference: torch.Tensor,
    loss: Literal["dmpo", "sdpo"],
    beta: float,
    sft_weight: float,
    training: TrainingConfig,
    name: str,
    validate: Callable[[LLMRecommender], float] | None = None,
    run_config: dict | None = None,
) -> FitResult:
    """DMPO or S-DPO from the SFT adapter: one positive and the example's k fixed negatives per
    prompt against the cached reference log-probs (``reference_logprobs``), plus ``sft_weight`` times
    the positive's per-token negative log-likelihood. ``model.prompt_batch.train`` prompts per forward."""
    if len({len(ex.negatives) for ex in examples}) != 1 or not examples[0].negatives:
        raise ValueError("preference training needs the same number (k >= 1) of negatives in every example")
    if reference.shape != (len(examples), 1 + len(examples[0].negatives)):
        raise ValueError(f"reference log-probs {tuple(reference.shape)} do not match the examples")
    preference_loss = PREFERENCE_LOSSES[loss]
    texts = prompts(model, examples, titles)
    candidates = [[model.candidate_ids(titles[i]) for i in (ex.target, *ex.negatives)] for ex in examples]

    def make_batches(epoch: int, generator: torch.Generator) -> Iterator[list[dict]]:
        for rows in shuffled_batches(len(examples), training.batch_size, generator):
            yield [{"prompt": texts[r], "candidates": candidates[r], "reference": reference[r]} for r in rows]

    def loss_fn(m: LLMRecommender, batch: list[dict]) -> torch.Tensor:
        shown, answers = [ex["prompt"] for ex in batch], [ex["candidates"] for ex in batch]
        policy = torch.stack(m.grouped_forward(shown, answers, m.prompt_batch.train))
        ref = torch.stack([ex["reference"] for ex in batch]).to(policy)
        value = preference_loss(policy[:, 0], policy[:, 1:], ref[:, 0], ref[:, 1:], beta)
        if sft_weight:
            n_tokens = torch.tensor([len(ex["candidates"][0]) for ex in batch], dtype=policy.dtype, device=policy.device)
            value = value + sft_weight * (-policy[:, 0] / n_tokens).mean()
        return value

    return fit(model, loss_fn, make_batches, validate, training, name, run_config)
