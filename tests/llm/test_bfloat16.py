"""What bfloat16 can promise, on the real SmolLM2 backbone and real Amazon rows, with bf16 forced
(``dtype="bfloat16"``), so these run on every CPU: natively where it has AVX512-BF16/AMX, emulated (and
slower) elsewhere.

The exact identities (shared prefix = separate prompts, batched = one at a time, vanishing top-p =
greedy) hold in float32 and are tested there (test_scoring.py, test_generation.py). bf16 keeps 8 bits
of mantissa, so its scores move by a few hundredths of a nat per token and near-equal logits can tie
or swap; what it must keep is the ranking. The bounds below are several times what was measured
(benchmarks/bench_dtype.py measures the same on whole runs): per-token score differences up to 0.054
against float32 (bound 0.2), the smallest per-row Spearman correlation 0.996 (bound 0.97), the same
top candidate on 12 of 12 rows (bound 3 in 4), and batched greedy generation identical to one prompt
at a time on 4 of 5 prompts, the fifth parting after 22 tokens.
"""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from llm_seqrec.llm.backbone import load_backbone
from llm_seqrec.llm.generation import GenerationSettings, chat_prompt, generate
from llm_seqrec.llm.prompts import chat_prompt_ids, recent_items_message, text_ids, truncate
from llm_seqrec.llm.scoring import batch_score_continuations, score_continuations
from test_generation import MESSAGES

pytestmark = pytest.mark.slow

USERS, NEGATIVES = 6, 10


@pytest.fixture(scope="module")
def float32():
    return load_backbone(dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def bfloat16():
    return load_backbone(dtype="bfloat16", device="cpu")


@pytest.fixture(scope="module")
def rows(amazon_dir, float32) -> list[tuple[list[int], list[list[int]]]]:
    """(prompt, candidate titles) of the first users of the shared Amazon set: the last 5 titles before
    the final item, then that item and seeded negatives, as the zero-shot scorer builds them."""
    interactions = pd.read_csv(amazon_dir / "interactions.csv")
    titles = pd.read_csv(amazon_dir / "items.csv").set_index("item_id")["title"].astype(str)
    rng = np.random.default_rng(0)
    tokenizer = float32.tokenizer
    out = []
    for user in sorted(interactions["user_id"].unique())[:USERS]:
        history = interactions[interactions["user_id"] == user].sort_values("timestamp")["item_id"].tolist()
        others = titles.index.difference(history).to_numpy()
        candidates = [history[-1], *rng.choice(others, NEGATIVES, replace=False)]
        prompt = chat_prompt_ids(tokenizer, recent_items_message([truncate(titles[i], 80) for i in history[-6:-1]]))
        out.append((prompt, [text_ids(tokenizer, truncate(titles[i], 80)) for i in candidates]))
    return out


def per_token_scores(backbone, rows) -> list[np.ndarray]:
    with torch.inference_mode():
        return [score_continuations(backbone.model, prompt, titles).mean().double().numpy() for prompt, titles in rows]


def test_bf16_candidate_scores_rank_as_float32(float32, bfloat16, rows):
    assert bfloat16.dtype == torch.bfloat16 and float32.dtype == torch.float32
    exact, rounded = per_token_scores(float32, rows), per_token_scores(bfloat16, rows)
    assert max(np.abs(a - b).max() for a, b in zip(exact, rounded, strict=True)) < 0.2
    assert min(spearmanr(a, b).statistic for a, b in zip(exact, rounded, strict=True)) > 0.97
    assert np.mean([a.argmax() == b.argmax() for a, b in zip(exact, rounded, strict=True)]) >= 0.75


def test_bf16_shared_prefix_stays_close_to_separate_prompts(bfloat16, rows):
    with torch.inference_mode():
        for prompt, titles in rows[:2]:
            shared = score_continuations(bfloat16.model, prompt, titles).mean().double().numpy()
            separate = np.array([score_continuations(bfloat16.model, prompt, [t]).mean().item() for t in titles])
            assert np.abs(shared - separate).max() < 0.2
            assert spearmanr(shared, separate).statistic > 0.97


def test_bf16_batched_prompts_stay_close_to_one_prompt_at_a_time(bfloat16, rows):
    """Several prompts of different lengths in one forward (the LoRA recommenders' ``prompt_batch``)."""
    assert len({len(prompt) for prompt, _ in rows}) > 1  # padding is exercised
    single = per_token_scores(bfloat16, rows)
    with torch.inference_mode():
        flat = batch_score_continuations(bfloat16.model, [p for p, _ in rows], [t for _, t in rows]).mean().double().numpy()
    batched = np.split(flat, np.cumsum([len(t) for _, t in rows])[:-1])
    assert max(np.abs(a - b).max() for a, b in zip(single, batched, strict=True)) < 0.2
    assert min(spearmanr(a, b).statistic for a, b in zip(single, batched, strict=True)) > 0.97


def test_bf16_batched_generation_mostly_equals_one_prompt_at_a_time(bfloat16):
    prompts = [chat_prompt(bfloat16, m) for m in MESSAGES]
    settings = GenerationSettings(max_new_tokens=24, batch_size=len(prompts))
    batched = generate(bfloat16, prompts, settings)
    single = [generate(bfloat16, [p], dataclasses.replace(settings, batch_size=1))[0] for p in prompts]
    assert sum(b.text == s.text for b, s in zip(batched, single, strict=True)) >= 3
    # Where they part, it is late: the first words are the same.
    assert all(b.text.split()[:3] == s.text.split()[:3] for b, s in zip(batched, single, strict=True))
