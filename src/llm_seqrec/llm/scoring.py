"""Short continuations of prompts, each prompt computed once, several prompts in one forward.

Zero-shot title scoring, the yes/no head and DMPO's policy/reference log-likelihoods all score a
handful of short continuations after a long prompt. Running prompt + continuation once per candidate
recomputes the prompt every time; here the prompts run once, as one right-padded batch (a single
prompt is a batch of one), each row of the KV cache is repeated over its prompt's continuations, and
all continuations run as one right-padded batch after it (``_continuation_states``). Right padding
keeps every prompt's real tokens at positions 0..len-1 (no position shift, and no all-masked attention
row that left padding gives the pad queries); the continuations of a prompt of length L take
positions L, L+1, ... and mask its padding slots out, so a padded prompt computes what it computes
alone, up to float rounding. Two readouts share that pass: ``score_continuations`` (each
continuation's own log-probability, vocabulary logits only at the positions that predict a
continuation token) and ``next_token_logits`` (a few tokens' logits after each whole continuation);
``batch_score_continuations`` and ``batch_next_token_logits`` take several prompts at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from transformers import PreTrainedModel

from llm_seqrec.data.padding import length_mask, right_pad

Prompt = Sequence[int] | torch.Tensor  # token ids, or input embeddings [prompt_len, hidden]


class ContinuationScores(NamedTuple):
    logprob: torch.Tensor  # [n] summed log-probability of each continuation's tokens
    n_tokens: torch.Tensor  # [n] tokens per continuation

    def mean(self) -> torch.Tensor:
        """Log-probability per token, so long and short continuations compare."""
        return self.logprob / self.n_tokens.to(self.logprob.dtype)


def _causal_lm(model: torch.nn.Module) -> PreTrainedModel:
    # A PEFT wrapper (LoRA and the like) injects its layers into the wrapped model in place, so the
    # unwrapped model computes with the adapters. Methods that add input tokens (prompt tuning) are
    # not applied here: pass their embeddings as the prompt instead.
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class _Prompts(NamedTuple):
    out: object  # the decoder's output on the prompts, with its KV cache
    lengths: torch.Tensor  # [B] real tokens per prompt
    mask: torch.Tensor  # [B, width] True at the real tokens


def _run_prompts(decoder: torch.nn.Module, prompts: Sequence[Prompt], device: torch.device, what: str) -> _Prompts:
    """The decoder's output (with its KV cache) on the right-padded prompts."""
    if len(prompts) == 0:
        raise ValueError(f"{what} needs at least one prompt")
    lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long, device=device)
    if int(lengths.min()) == 0:
        raise ValueError(f"{what} needs a non-empty prompt")
    width = int(lengths.max())
    if all(torch.is_tensor(p) and p.is_floating_point() for p in prompts):
        inputs = {"inputs_embeds": torch.stack([
            torch.nn.functional.pad(p.to(device), (0, 0, 0, width - len(p))) for p in prompts
        ])}
    else:
        ids = [p.tolist() if torch.is_tensor(p) else list(p) for p in prompts]
        inputs = {"input_ids": right_pad(ids, device=device)[0]}
    mask = length_mask(lengths, width)
    # Prompts of one length need no mask (the decoder's plain causal path, as for a single prompt).
    attention = None if bool(mask.all()) else mask.long()
    return _Prompts(decoder(**inputs, attention_mask=attention, use_cache=True), lengths, mask)


def _continuation_states(
    decoder, prompts: _Prompts, owner: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """Hidden states ``[n, width]`` of right-padded ``tokens`` (``lengths`` real tokens per row), row r
    continuing prompt ``owner[r]``: that prompt's KV cache row under it, its padding masked out."""
    n, width = tokens.shape
    cache = prompts.out.past_key_values
    cache.reorder_cache(owner)
    present = length_mask(lengths, width)
    out = decoder(
        input_ids=tokens,
        attention_mask=torch.cat([prompts.mask[owner], present], dim=1).long(),
        position_ids=prompts.lengths[owner].unsqueeze(1) + torch.arange(width, device=tokens.device),
        past_key_values=cache,
        use_cache=True,
    )
    return out.last_hidden_state


def _flat(continuations: Sequence[Sequence[Sequence[int]]], device: torch.device, what: str):
    """All prompts' continuations as one right-padded batch, their lengths and each row's prompt."""
    if any(len(c) == 0 for c in continuations) or min(len(c) for rows in continuations for c in rows) < 1:
        raise ValueError(f"{what} needs at least one continuation per prompt, each with at least one token")
    tokens, lengths = right_pad([c for rows in continuations for c in rows], device=device)
    owner = torch.repeat_interleave(torch.arange(len(continuations), device=device),
                                    torch.tensor([len(rows) for rows in continuations], device=device))
    return tokens, lengths, owner


def batch_score_continuations(
    model: torch.nn.Module, prompts: Sequence[Prompt], continuations: Sequence[Sequence[Sequence[int]]]
) -> ContinuationScores:
    """``score_continuations`` of several prompts in one forward: ``continuations[b]`` are prompt b's;
    the result is flat, prompt 0's continuations first."""
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} lists of continuations")
    lm = _causal_lm(model)
    decoder, head = lm.get_decoder(), lm.get_output_embeddings()
    device = head.weight.device
    tokens, lengths, owner = _flat(continuations, device, "score_continuations")
    n, width = tokens.shape
    prompt_run = _run_prompts(decoder, prompts, device, "score_continuations")

    # Hidden states that predict continuation token j: the prompt's last real state for j = 0, then
    # the state of continuation token j - 1. The last token of the longest continuation predicts
    # nothing, so it is not fed.
    last = prompt_run.out.last_hidden_state[torch.arange(len(prompts), device=device), prompt_run.lengths - 1]
    states = last[owner].unsqueeze(1)
    if width > 1:
        body = _continuation_states(decoder, prompt_run, owner, tokens[:, :-1], lengths)
        states = torch.cat([states, body], dim=1)

    used = length_mask(lengths, width)
    logits = head(states[used]).float()
    token_logprob = torch.log_softmax(logits, dim=-1).gather(1, tokens[used].unsqueeze(1)).squeeze(1)
    per_position = token_logprob.new_zeros(n, width).masked_scatter(used, token_logprob)
    return ContinuationScores(logprob=per_position.sum(1), n_tokens=lengths)


def score_continuations(
    model: torch.nn.Module, prompt: Prompt, continuations: Sequence[Sequence[int]]
) -> ContinuationScores:
    """Summed log p(continuation | prompt) for each continuation, sharing one pass over the prompt.

    ``model`` is a Hugging Face causal LM (or a PEFT wrapper of one); ``prompt`` is token ids (a list
    or 1-D LongTensor) or input embeddings (a 2-D float tensor [prompt_len, hidden]); each
    continuation is a non-empty list of token ids. Gradients flow when they are enabled.
    """
    return batch_score_continuations(model, [prompt], [continuations])


def batch_next_token_logits(
    model: torch.nn.Module, prompts: Sequence[Prompt], continuations: Sequence[Sequence[Sequence[int]]],
    token_ids: Sequence[int],
) -> torch.Tensor:
    """``next_token_logits`` of several prompts in one forward, flat as ``batch_score_continuations``."""
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} lists of continuations")
    lm = _causal_lm(model)
    decoder, head = lm.get_decoder(), lm.get_output_embeddings()
    device = head.weight.device
    tokens, lengths, owner = _flat(continuations, device, "next_token_logits")
    prompt_run = _run_prompts(decoder, prompts, device, "next_token_logits")
    states = _continuation_states(decoder, prompt_run, owner, tokens, lengths)
    last = states[torch.arange(len(tokens), device=device), lengths - 1]
    index = torch.as_tensor(token_ids, dtype=torch.long, device=device)
    logits = last @ head.weight[index].T
    if getattr(head, "bias", None) is not None:
        logits = logits + head.bias[index]
    return logits.float()


def next_token_logits(
    model: torch.nn.Module, prompt: Prompt, continuations: Sequence[Sequence[int]], token_ids: Sequence[int]
) -> torch.Tensor:
    """Logits ``[n, len(token_ids)]`` (float32) of ``token_ids`` at the position after each whole
    continuation, sharing one pass over the prompt; only the output-embedding rows of ``token_ids``
    are multiplied. Works with gradients and through a PEFT wrapper."""
    return batch_next_token_logits(model, [prompt], [continuations], token_ids)
