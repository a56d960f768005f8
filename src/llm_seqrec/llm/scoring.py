"""Several short continuations of one prompt, the prompt computed once.

Zero-shot title scoring, the yes/no head and DMPO's policy/reference log-likelihoods all score a
handful of short continuations after one long prompt. Running prompt + continuation once per
candidate recomputes the prompt every time; here the prompt runs once, its KV cache is repeated
over the candidates, and the continuations run as one right-padded batch (``_continuation_states``).
Two readouts share that pass: ``score_continuations`` (each continuation's own log-probability,
vocabulary logits only at the positions that predict a continuation token) and ``next_token_logits``
(a few tokens' logits after each whole continuation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from transformers import PreTrainedModel

from llm_seqrec.data.padding import length_mask, right_pad


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


def _run_prompt(decoder: torch.nn.Module, prompt: Sequence[int] | torch.Tensor, device: torch.device, what: str):
    """The decoder's output (with its KV cache) on the prompt alone, and the prompt's length."""
    if torch.is_tensor(prompt) and prompt.is_floating_point():
        inputs = {"inputs_embeds": prompt.to(device).unsqueeze(0)}
    else:
        inputs = {"input_ids": torch.as_tensor(prompt, dtype=torch.long, device=device).view(1, -1)}
    prompt_len = next(iter(inputs.values())).shape[1]
    if prompt_len == 0:
        raise ValueError(f"{what} needs a non-empty prompt")
    return decoder(**inputs, use_cache=True), prompt_len


def _continuation_states(decoder, prompt_out, prompt_len: int, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Hidden states ``[n, width]`` of right-padded ``tokens`` after the prompt: its KV cache repeated
    over the rows, padding masked out (``lengths`` real tokens per row)."""
    n, width = tokens.shape
    cache = prompt_out.past_key_values
    cache.batch_repeat_interleave(n)
    present = length_mask(lengths, width)
    out = decoder(
        input_ids=tokens,
        attention_mask=torch.cat([present.new_ones(n, prompt_len), present], dim=1).long(),
        position_ids=(prompt_len + torch.arange(width, device=tokens.device)).expand(n, -1),
        past_key_values=cache,
        use_cache=True,
    )
    return out.last_hidden_state


def _padded(continuations: Sequence[Sequence[int]], device: torch.device, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if len(continuations) == 0 or min(len(c) for c in continuations) < 1:
        raise ValueError(f"{what} needs at least one continuation, each with at least one token")
    return right_pad(continuations, device=device)


def score_continuations(
    model: torch.nn.Module,
    prompt: Sequence[int] | torch.Tensor,
    continuations: Sequence[Sequence[int]],
) -> ContinuationScores:
    """Summed log p(continuation | prompt) for each continuation, sharing one pass over the prompt.

    ``model`` is a Hugging Face causal LM (or a PEFT wrapper of one); ``prompt`` is token ids (a list
    or 1-D LongTensor) or input embeddings (a 2-D float tensor [prompt_len, hidden]); each
    continuation is a non-empty list of token ids. Gradients flow when they are enabled.
    """
    lm = _causal_lm(model)
    decoder, head = lm.get_decoder(), lm.get_output_embeddings()
    device = head.weight.device
    tokens, lengths = _padded(continuations, device, "score_continuations")
    n, width = tokens.shape
    prompt_out, prompt_len = _run_prompt(decoder, prompt, device, "score_continuations")

    # Hidden states that predict continuation token j: the prompt's last state for j = 0, then the
    # state of continuation token j - 1. The last token of the longest continuation predicts nothing,
    # so it is not fed.
    states = prompt_out.last_hidden_state[:, -1:].expand(n, 1, -1)
    if width > 1:
        body = _continuation_states(decoder, prompt_out, prompt_len, tokens[:, :-1], lengths)
        states = torch.cat([states, body], dim=1)

    used = length_mask(lengths, width)
    logits = head(states[used]).float()
    token_logprob = torch.log_softmax(logits, dim=-1).gather(1, tokens[used].unsqueeze(1)).squeeze(1)
    per_position = token_logprob.new_zeros(n, width).masked_scatter(used, token_logprob)
    return ContinuationScores(logprob=per_position.sum(1), n_tokens=lengths)


def next_token_logits(
    model: torch.nn.Module, prompt: Sequence[int], continuations: Sequence[Sequence[int]], token_ids: Sequence[int]
) -> torch.Tensor:
    """Logits ``[n, len(token_ids)]`` (float32) of ``token_ids`` at the position after each whole
    continuation, sharing one pass over the prompt; only the output-embedding rows of ``token_ids``
    are multiplied. Works with gradients and through a PEFT wrapper."""
    lm = _causal_lm(model)
    decoder, head = lm.get_decoder(), lm.get_output_embeddings()
    device = head.weight.device
    tokens, lengths = _padded(continuations, device, "next_token_logits")
    prompt_out, prompt_len = _run_prompt(decoder, prompt, device, "next_token_logits")
    states = _continuation_states(decoder, prompt_out, prompt_len, tokens, lengths)
    last = states[torch.arange(len(tokens), device=device), lengths - 1]
    index = torch.as_tensor(token_ids, dtype=torch.long, device=device)
    logits = last @ head.weight[index].T
    if getattr(head, "bias", None) is not None:
        logits = logits + head.bias[index]
    return logits.float()
