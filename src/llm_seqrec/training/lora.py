"""Training the LoRA LLM recommender (``models.llm_recommender``): its training examples, its
validator (``evaluation.scoring.validation_metric``, sampled NDCG@5 of seeded users of the LLM user
sample) and two procedures, the yes/no BCE of LLM-TRSR (``fit_yes_no``) and supervised fine-tuning
(``fit_sft``), both through the shared ``training.fit`` loop; preference optimisation is
``training.preference``. ``adapter_scores`` scores a saved adapter through ``score_table``, as the
LLM-TRSR and DMPO scoring nodes do. No Kedro here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from llm_seqrec.data.leakage import check_inputs_precede_targets
from llm_seqrec.data.negatives import sample_negatives
from llm_seqrec.data.schema import SPLITS
from llm_seqrec.evaluation.protocol import llm_user_sample
from llm_seqrec.evaluation.score_cache import ScoreCache
from llm_seqrec.evaluation.scoring import ROW_CHUNK, Summaries, score_table, validation_metric
from llm_seqrec.llm.backbone import Backbone
from llm_seqrec.llm.prompts import item_titles
from llm_seqrec.models.llm_recommender import LLMRecommender, PromptBatch
from llm_seqrec.models.losses import yes_no_bce
from llm_seqrec.training.config import TrainingConfig
from llm_seqrec.training.loop import FitResult, fit


@dataclass(frozen=True)
class Example:
    """One training prompt: the user's input items (oldest first), the target, optional summary and
    fixed negatives (preference training samples them once, so reference log-probs can be cached)."""

    user_idx: int
    history: tuple[int, ...]
    target: int
    summary: str | None = None
    negatives: tuple[int, ...] = ()


def training_users(user_sequences: pd.DataFrame, summarised: Sequence[int], n: int | None, seed: int) -> list[int]:
    """Up to ``n`` users with a training target (two or more training items), seeded, those with a
    train-cutoff summary first; a shorter list is a prefix of a longer one (nested few-shot sets)."""
    eligible = user_sequences.loc[user_sequences["train_items"].map(len) >= 2, "user_idx"].to_numpy(np.int64)
    order = np.random.default_rng(seed).permutation(np.sort(eligible))
    has_summary = np.isin(order, np.asarray(list(summarised), dtype=np.int64))
    ordered = np.concatenate([order[has_summary], order[~has_summary]])
    return ordered[:n].tolist() if n is not None else ordered.tolist()


def train_cutoff_examples(
    user_sequences: pd.DataFrame, users: Sequence[int], summaries: Mapping[int, str] | None = None
) -> list[Example]:
    """The ``train`` cutoff of each user: input ``train_items[:-1]``, target ``train_items[-1]``."""
    rows = user_sequences.set_index("user_idx").loc[list(users), "train_items"]
    return [
        Example(int(u), tuple(int(i) for i in items[:-1]), int(items[-1]), (summaries or {}).get(int(u)))
        for u, items in rows.items()
    ]


def summaries_by_cutoff(user_summaries: pd.DataFrame | None) -> dict[tuple[int, str], str]:
    """(user_idx, cutoff) -> summary text, from the summarization stage's ``user_summaries``."""
    if user_summaries is None or user_summaries.empty:
        return {}
    columns = (user_summaries["user_idx"], user_summaries["cutoff"], user_summaries["summary"])
    return {(int(u), c): s for u, c, s in zip(*columns, strict=True)}


def require_summaries(summaries: Summaries, eval_candidates: pd.DataFrame, users: Sequence[int]) -> None:
    """Refuse to score prompts that show summaries when an evaluated (user, cutoff) has none."""
    rows = eval_candidates[eval_candidates["user_idx"].isin(list(users))]
    missing = sorted({(int(u), s) for u, s in zip(rows["user_idx"], rows["split"], strict=True)} - set(summaries))
    if missing:
        raise ValueError(
            f"user_summaries has no summary for {len(missing)} evaluated (user, cutoff) pairs, e.g. {missing[:3]}: "
            "run `kedro run --pipelines=summarization` with the same evaluation.llm_user_sample and seed"
        )


def validation_users(
    user_sequences: pd.DataFrame, eval_candidates: pd.DataFrame, sample: int | None, sample_seed: int,
    n_users: int | None, seed: int,
) -> list[int]:
    """A seeded ``n_users`` (all when None) of the LLM user sample (``sample`` users by ``sample_seed``),
    drawn over its validation-split candidate rows: the users early stopping scores."""
    users = llm_user_sample(user_sequences, sample, sample_seed)
    valid = eval_candidates[eval_candidates["user_idx"].isin(users) & (eval_candidates["split"] == "valid")]
    if n_users is not None and n_users < len(valid):
        valid = valid.iloc[np.sort(np.random.default_rng(seed).choice(len(valid), n_users, replace=False))]
    return [int(u) for u in valid["user_idx"]]


def sampled_validator(
    user_sequences: pd.DataFrame, eval_candidates: pd.DataFrame, users: Sequence[int], summaries: Summaries
) -> Callable[[LLMRecommender], float]:
    """Sampled-protocol NDCG@5 of ``users`` at the valid cutoff: every LoRA procedure's early-stopping metric."""
    valid = user_sequences[user_sequences["user_idx"].isin(list(users))]
    return lambda model: validation_metric(model, valid, eval_candidates, protocol="sampled", k=5, summaries=summaries)


def prompts(model: LLMRecommender, examples: Sequence[Example], titles: Mapping[int, str]) -> list[list[int]]:
    return [model.prompt_ids([titles[i] for i in ex.history], ex.summary) for ex in examples]


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[list[int]]:
    """Example positions in a fresh seeded order, ``batch_size`` at a time."""
    order = torch.randperm(n, generator=generator).tolist()
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def fit_yes_no(
    model: LLMRecommender,
    examples: Sequence[Example],
    titles: Mapping[int, str],
    n_items: int,
    negatives: int,
    training: TrainingConfig,
    name: str,
    validate: Callable[[LLMRecommender], float] | None = None,
    run_config: dict | None = None,
) -> FitResult:
    """LLM-TRSR: each prompt with its positive (label 1) and ``negatives`` fresh random items (label 0)
    per epoch, BCE on p(Yes). A batch is ``training.batch_size`` prompts, run ``model.prompt_batch.train``
    per forward (``LLMRecommender.grouped_forward``)."""
    texts = prompts(model, examples, titles)
    excluded = [{*ex.history, ex.target} for ex in examples]

    def make_batches(epoch: int, generator: torch.Generator) -> Iterator[list[dict]]:
        for rows in shuffled_batches(len(examples), training.batch_size, generator):
            batch = []
            for r in rows:
                items = [examples[r].target, *sample_negatives(n_items, excluded[r], negatives, generator)]
                batch.append({
                    "prompt": texts[r],
                    "candidates": [model.candidate_ids(titles[i]) for i in items],
                    "labels": torch.tensor([1.0] + [0.0] * negatives),
                })
            yield batch

    def loss_fn(m: LLMRecommender, batch: list[dict]) -> torch.Tensor:
        shown, candidates = [ex["prompt"] for ex in batch], [ex["candidates"] for ex in batch]
        log_odds = torch.cat(m.grouped_forward(shown, candidates, m.prompt_batch.train))
        return yes_no_bce(log_odds, torch.cat([ex["labels"] for ex in batch]))

    return fit(model, loss_fn, make_batches, validate, training, name, run_config)


def fit_sft(
    model: LLMRecommender,
    examples: Sequence[Example],
    titles: Mapping[int, str],
    training: TrainingConfig,
    name: str,
    validate: Callable[[LLMRecommender], float] | None = None,
    run_config: dict | None = None,
) -> FitResult:
    """Supervised fine-tuning: the positive title as the answer, mean negative log-likelihood per
    title token; ``model.prompt_batch.train`` prompts per forward."""
    texts = prompts(model, examples, titles)
    answers = [model.candidate_ids(titles[ex.target]) for ex in examples]

    def make_batches(epoch: int, generator: torch.Generator) -> Iterator[list[dict]]:
        for rows in shuffled_batches(len(examples), training.batch_size, generator):
            yield [{"prompt": texts[r], "answer": answers[r]} for r in rows]

    def loss_fn(m: LLMRecommender, batch: list[dict]) -> torch.Tensor:
        shown, answers = [ex["prompt"] for ex in batch], [[ex["answer"]] for ex in batch]
        logprobs = m.grouped_forward(shown, answers, m.prompt_batch.train)
        return torch.stack([-value[0] / len(ex["answer"]) for value, ex in zip(logprobs, batch, strict=True)]).mean()

    return fit(model, loss_fn, make_batches, validate, training, name, run_config)


def cutoff_examples(
    user_sequences: pd.DataFrame, summaries: Mapping[int, str], n: int | None, seed: int, what: str
) -> list[Example]:
    """The train-cutoff examples of ``training_users`` (summarised users first), leakage-checked."""
    users = training_users(user_sequences, sorted(summaries), n, seed)
    examples = train_cutoff_examples(user_sequences, users, summaries)
    check_inputs_precede_targets(
        user_sequences, [e.user_idx for e in examples], "train", [e.history for e in examples],
        targets=[e.target for e in examples], what=what,
    )
    return examples


def adapter_scores(
    adapter: dict,
    backbone: Backbone,
    user_sequences: pd.DataFrame,
    item_catalog: pd.DataFrame,
    user_summaries: pd.DataFrame,
    eval_candidates: pd.DataFrame,
    *,
    max_item_chars: int,
    sample: int | None,
    sample_seed: int,
    every_summary: bool,
    progress: bool = False,
    cache: ScoreCache | None = None,
    prompt_batch: PromptBatch = PromptBatch(),
    splits: Sequence[str] = SPLITS,
) -> tuple[pd.DataFrame, str]:
    """A LoRA recommender artifact's score table (sampled protocol, ``splits``, the LLM user sample of
    ``sample`` users; prompts as the adapter was trained) and its model name. With ``every_summary``
    and a prompt that shows summaries, every evaluated (user, cutoff) must have one. ``prompt_batch``:
    prompts per forward (float rounding only, so the score cache's rows serve any value)."""
    model = LLMRecommender.from_artifact(adapter, backbone, item_titles(item_catalog, max_item_chars), prompt_batch)
    users = llm_user_sample(user_sequences, sample, sample_seed)
    summaries = summaries_by_cutoff(user_summaries)
    if every_summary and model.config.prompt.use_summary:
        require_summaries(summaries, eval_candidates[eval_candidates["split"].isin(list(splits))], users)
    name = model.config.meta["model"]
    table = score_table(model, user_sequences, eval_candidates, users=users, summaries=summaries, splits=splits,
                        batch_size=ROW_CHUNK, progress=progress, desc=name, cache=cache)
    return table, name
