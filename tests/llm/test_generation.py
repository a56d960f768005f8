import dataclasses

import pytest
import torch

from llm_seqrec.llm.backbone import load_backbone
from llm_seqrec.llm.generation import GenerationSettings, chat_prompt, generate, generate_chat

MESSAGES = [
    "Hi",
    "Summarise: a red claw hammer, a box of steel nails, a hand saw.",
    "Here are items a user chose, oldest first:\n1. Nitrile gloves, box of 100\n2. Borosilicate beakers, 250 ml\n"
    "3. Digital pH meter with calibration buffers\nSummarise this user's preferences.",
    "What is 2 + 2?",
    "Name three uses of a multimeter.",
]


@pytest.fixture(scope="module")
def backbone():
    # float32, pinned: the identities below (batched = one at a time, pruned batch = generate, vanishing
    # top-p = greedy) hold exactly only there; bf16's rounding ties and flips near-equal logits.
    return load_backbone(dtype="float32", device="cpu")


@pytest.mark.parametrize("no_repeat_ngram_size", [0, 3])
def test_batched_generation_equals_one_prompt_at_a_time(backbone, no_repeat_ngram_size):
    # Prompts of different lengths share a batch: left padding must not change any greedy output
    # (nor may the pad tokens count as text for the n-gram ban).
    prompts = [chat_prompt(backbone, m) for m in MESSAGES]
    settings = GenerationSettings(max_new_tokens=16, batch_size=len(prompts), no_repeat_ngram_size=no_repeat_ngram_size)
    batched = generate(backbone, prompts, settings)
    single = [generate(backbone, [p], dataclasses.replace(settings, batch_size=1))[0] for p in prompts]
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.tokens_out for g in batched] == [g.tokens_out for g in single]
    assert [g.tokens_in for g in batched] == [len(backbone.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    assert all(0 < g.tokens_out <= 16 and g.text for g in batched)


def test_generate_chat_wraps_messages_in_the_chat_template(backbone):
    prompt = chat_prompt(backbone, "Hello", "Be brief.")
    assert prompt.startswith("<|im_start|>system\nBe brief.") and prompt.endswith("<|im_start|>assistant\n")
    settings = GenerationSettings(max_new_tokens=8, batch_size=2)
    direct = generate(backbone, [chat_prompt(backbone, m, "Be brief.") for m in MESSAGES[:2]], settings)
    chat = generate_chat(backbone, MESSAGES[:2], settings, system="Be brief.")
    assert [(g.text, g.tokens_in, g.tokens_out) for g in chat] == [(g.text, g.tokens_in, g.tokens_out) for g in direct]


def test_settings_identity_holds_what_changes_the_text():
    greedy = GenerationSettings(max_new_tokens=32, batch_size=4)
    assert greedy.identity() == GenerationSettings(max_new_tokens=32, batch_size=64, temperature=0.3).identity()
    assert greedy.identity() != GenerationSettings(max_new_tokens=33).identity()
    assert greedy.identity() != GenerationSettings(max_new_tokens=32, no_repeat_ngram_size=3).identity()
    sampled = GenerationSettings(do_sample=True, temperature=0.7)
    assert sampled.identity()["temperature"] == 0.7 and "batch_size" not in sampled.identity()


@pytest.mark.parametrize("no_repeat_ngram_size", [0, 3])
def test_rows_leaving_the_batch_keep_model_generate_outputs(backbone, no_repeat_ngram_size):
    # Rows stop at different steps ("Hi" within a few tokens, the summarising prompts run to the cap), so
    # the pruned batch and its KV cache must still give every row what transformers' generate gives.
    prompts = [chat_prompt(backbone, m) for m in MESSAGES]
    settings = GenerationSettings(max_new_tokens=40, batch_size=len(prompts), no_repeat_ngram_size=no_repeat_ngram_size)
    ours = generate(backbone, prompts, settings)
    tokenizer = backbone.tokenizer
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        batch = tokenizer(prompts, add_special_tokens=False, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = side
    with torch.inference_mode():
        output = backbone.model.generate(
            **batch, max_new_tokens=40, do_sample=False, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id, no_repeat_ngram_size=no_repeat_ngram_size,
        )
    reference = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert [g.text for g in ours] == [r.strip() for r in reference]
    assert len({g.tokens_out for g in ours}) > 1  # the rows did stop at different steps


def test_sampling_with_a_vanishing_top_p_is_greedy(backbone):
    # Top-p keeps only the most likely token as p goes to 0, so sampling must then pick what greedy picks,
    # row by row, while rows leave the batch.
    prompts = [chat_prompt(backbone, m) for m in MESSAGES]
    greedy = GenerationSettings(max_new_tokens=24, batch_size=len(prompts))
    sampled = dataclasses.replace(greedy, do_sample=True, temperature=0.7, top_p=1e-6)
    torch.manual_seed(0)
    assert [g.text for g in generate(backbone, prompts, sampled)] == [g.text for g in generate(backbone, prompts, greedy)]
