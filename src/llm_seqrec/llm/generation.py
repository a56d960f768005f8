"""Batched text generation with the KV cache.

Prompts are sorted by token length and cut into batches, so a batch pads little; padding goes on the
left, so every row's last position is a real token and new tokens append in step across the batch.
Greedy decoding by default: a summary is then a function of its prompt, which the summary cache
relies on (its keys hash the generation settings, not the outputs).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from llm_seqrec.llm.backbone import Backbone


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 96
    batch_size: int = 16
    do_sample: bool = False
    no_repeat_ngram_size: int = 0  # > 0: no n-gram twice in a row's text (prompt included); 0 = off
    temperature: float = 1.0
    top_p: float = 1.0

    def identity(self) -> dict:
        """The settings that change the output text (batch size does not), for cache keys."""
        out = asdict(self)
        del out["batch_size"]
        if not self.do_sample:  # greedy ignores the sampling knobs
            del out["temperature"], out["top_p"]
        return out


@dataclass(frozen=True)
class Generation:
    text: str
    tokens_in: int
    tokens_out: int  # generated tokens before the stop token
    seconds: float  # the batch's wall time shared equally by its rows


def chat_prompt(backbone: Backbone, user: str, system: str | None = None) -> str:
    """``user`` (and ``system``) in the model's chat template, ending where the assistant's reply starts."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return backbone.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def generate(
    backbone: Backbone, prompts: list[str], settings: GenerationSettings = GenerationSettings()
) -> list[Generation]:
    """One completion per prompt (already in the chat template), in the order given."""
    tokenizer, model = backbone.tokenizer, backbone.model
    # The chat template already holds the special tokens; a tokenizer that adds BOS would double it.
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    pad_id = tokenizer.pad_token_id
    stop_ids = {tokenizer.eos_token_id}
    if model.generation_config.eos_token_id is not None:
        eos = model.generation_config.eos_token_id
        stop_ids.update(eos if isinstance(eos, list) else [eos])
    sampling = {"do_sample": False}
    if settings.do_sample:
        sampling = {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p}

    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]), reverse=True)
    results: list[Generation | None] = [None] * len(prompts)
    for start in range(0, len(order), settings.batch_size):
        rows = order[start : start + settings.batch_size]
        width = max(len(encoded[i]) for i in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            n = len(encoded[i])
            input_ids[r, width - n :] = torch.tensor(encoded[i])
            attention_mask[r, width - n :] = 1
        began = time.perf_counter()
        with torch.inference_mode():
            output = model.generate(
                input_ids=input_ids.to(backbone.device),
                attention_mask=attention_mask.to(backbone.device),
                max_new_tokens=settings.max_new_tokens,
                pad_token_id=pad_id,
                eos_token_id=sorted(stop_ids),
                no_repeat_ngram_size=settings.no_repeat_ngram_size,
                **sampling,
            )
        seconds = (time.perf_counter() - began) / len(rows)
        for r, i in enumerate(rows):
            new = output[r, width:].tolist()
            n_out = next((k for k, t in enumerate(new) if t in stop_ids), len(new))
            text = tokenizer.decode(new[:n_out], skip_special_tokens=True).strip()
            results[i] = Generation(text=text, tokens_in=len(encoded[i]), tokens_out=n_out, seconds=seconds)
    return results


def generate_chat(
    backbone: Backbone,
    messages: list[str],
    settings: GenerationSettings = GenerationSettings(),
    system: str | None = None,
) -> list[Generation]:
    """``generate`` on user messages put in the chat template (the summarisation driver's ``generate_fn``)."""
    return generate(backbone, [chat_prompt(backbone, m, system) for m in messages], settings)
