"""Batched text generation with the KV cache.

Prompts are sorted by token length and cut into batches, so a batch pads little; padding goes on the
left, so every row's last position is a real token and new tokens append in step across the batch. A row
leaves the batch, its KV cache rows with it, as soon as it stops: summaries' lengths vary several-fold,
and ``model.generate`` would go on computing finished rows until the longest one ends.
Greedy decoding by default: a summary is then a function of its prompt, which the summary cache
relies on (its keys hash the generation settings, not the outputs).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Annotated

import torch
from annotated_types import Ge, Gt, Le
from pydantic import ConfigDict
from transformers.generation.logits_process import (
    LogitsProcessorList,
    NoRepeatNGramLogitsProcessor,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from llm_seqrec.llm.backbone import Backbone


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings; greedy unless ``do_sample``. Defined once: ``summarization.generation`` in the
    parameters is this (the ``Annotated`` bounds are pydantic's)."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    max_new_tokens: Annotated[int, Ge(1)] = 96
    batch_size: Annotated[int, Ge(1)] = 32
    do_sample: bool = False
    no_repeat_ngram_size: Annotated[int, Ge(0)] = 0  # > 0: no n-gram twice in a row's text (prompt included); 0 = off
    temperature: Annotated[float, Gt(0)] = 1.0
    top_p: Annotated[float, Gt(0), Le(1)] = 1.0

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
            output = decode(model, input_ids.to(backbone.device), attention_mask.to(backbone.device), settings, stop_ids)
        seconds = (time.perf_counter() - began) / len(rows)
        for r, i in enumerate(rows):
            new = output[r]
            n_out = next((k for k, t in enumerate(new) if t in stop_ids), len(new))
            text = tokenizer.decode(new[:n_out], skip_special_tokens=True).strip()
            results[i] = Generation(text=text, tokens_in=len(encoded[i]), tokens_out=n_out, seconds=seconds)
    return results


def decode(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    settings: GenerationSettings,
    stop_ids: set[int],
) -> list[list[int]]:
    """The new tokens of each left-padded row, up to and including its first stop token (at most
    ``settings.max_new_tokens``), with ``model.generate``'s decoding: greedy or top-p sampling, and the
    n-gram ban over the row's whole text. Finished rows leave the batch and the KV cache."""
    processors = LogitsProcessorList()
    if settings.no_repeat_ngram_size > 0:
        processors.append(NoRepeatNGramLogitsProcessor(settings.no_repeat_ngram_size))
    if settings.do_sample:
        processors.extend([TemperatureLogitsWarper(settings.temperature), TopPLogitsWarper(settings.top_p)])
    stops = torch.tensor(sorted(stop_ids), device=input_ids.device)
    new: list[list[int]] = [[] for _ in range(len(input_ids))]
    rows = torch.arange(len(input_ids), device=input_ids.device)  # the rows of ``new`` still generating
    text, mask = input_ids, attention_mask
    step, positions, cache = input_ids, (attention_mask.cumsum(-1) - 1).clamp(min=0), None
    for _ in range(settings.max_new_tokens):
        out = model(
            input_ids=step, attention_mask=mask, position_ids=positions,
            past_key_values=cache, use_cache=True, logits_to_keep=1,
        )
        cache = out.past_key_values
        scores = processors(text, out.logits[:, -1, :].float())
        tokens = torch.multinomial(scores.softmax(-1), 1).squeeze(1) if settings.do_sample else scores.argmax(-1)
        for row, token in zip(rows.tolist(), tokens.tolist(), strict=True):
            new[row].append(token)
        going = ~torch.isin(tokens, stops)
        if not going.all():
            if not going.any():
                break
            keep = going.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            rows, tokens, text, mask, positions = rows[keep], tokens[keep], text[keep], mask[keep], positions[keep]
        text = torch.cat([text, tokens[:, None]], dim=1)
        mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)
        positions = positions[:, -1:] + 1
        step = tokens[:, None]
    return new


def generate_chat(
    backbone: Backbone,
    messages: list[str],
    settings: GenerationSettings = GenerationSettings(),
    system: str | None = None,
) -> list[Generation]:
    """``generate`` on user messages put in the chat template (the summarisation driver's ``generate_fn``)."""
    return generate(backbone, [chat_prompt(backbone, m, system) for m in messages], settings)
