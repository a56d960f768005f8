"""Log-likelihoods of several continuations of one prompt, the prompt computed once.

Zero-shot title scoring, yes/no scoring and DMPO's policy/reference log-likelihoods all score a
handful of short continuations after one long prompt. Running prompt + continuation once per
candidate recomputes the prompt every time; here the prompt runs once, its KV cache is repeated
over the candidates, and the continuations run as one right-padded batch. Vocabulary logits are
computed only at the positions that predict a continuation token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import pandas as pd
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llm_seqrec.data.leakage import check_inputs_precede_targets
from llm_seqrec.data.schema import split_input
from llm_seqrec.llm.prompts import chat_prompt_ids, item_titles, recent_items_message, text_ids


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
    n = len(continuations)
    lengths = torch.tensor([len(c) for c in continuations], device=device)
    if n == 0 or int(lengths.min()) < 1:
        raise ValueError("score_continuations needs at least one continuation, each with at least one token")
    width = int(lengths.max())
    tokens = torch.zeros(n, width, dtype=torch.long, device=device)
    for i, ids in enumerate(continuations):
        tokens[i, : len(ids)] = torch.as_tensor(ids, dtype=torch.long, device=device)

    if torch.is_tensor(prompt) and prompt.is_floating_point():
        prompt_inputs = {"inputs_embeds": prompt.to(device).unsqueeze(0)}
    else:
        prompt_inputs = {"input_ids": torch.as_tensor(prompt, dtype=torch.long, device=device).view(1, -1)}
    prompt_len = next(iter(prompt_inputs.values())).shape[1]
    if prompt_len == 0:
        raise ValueError("score_continuations needs a non-empty prompt")
    prompt_out = decoder(**prompt_inputs, use_cache=True)

    # Hidden states that predict continuation token j: the prompt's last state for j = 0, then the
    # state of continuation token j - 1. The last token of the longest continuation predicts nothing,
    # so it is not fed.
    states = prompt_out.last_hidden_state[:, -1:].expand(n, 1, -1)
    if width > 1:
        cache = prompt_out.past_key_values
        cache.batch_repeat_interleave(n)
        body = tokens[:, :-1]
        present = torch.arange(width - 1, device=device) < lengths.unsqueeze(1)
        attention_mask = torch.cat([present.new_ones(n, prompt_len), present], dim=1).long()
        position_ids = (prompt_len + torch.arange(width - 1, device=device)).expand(n, -1)
        body_out = decoder(
            input_ids=body,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
        )
        states = torch.cat([states, body_out.last_hidden_state], dim=1)

    used = torch.arange(width, device=device) < lengths.unsqueeze(1)
    logits = head(states[used]).float()
    token_logprob = torch.log_softmax(logits, dim=-1).gather(1, tokens[used].unsqueeze(1)).squeeze(1)
    per_position = token_logprob.new_zeros(n, width).masked_scatter(used, token_logprob)
    return ContinuationScores(logprob=per_position.sum(1), n_tokens=lengths)


def zeroshot_scores(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    user_sequences: pd.DataFrame,
    item_catalog: pd.DataFrame,
    eval_candidates: pd.DataFrame,
    recent_items: int,
    max_item_chars: int,
    length_normalize: bool = True,
    progress: bool = True,
) -> list[list[float]]:
    """The frozen LLM's score of every candidate, aligned with ``eval_candidates`` rows: the
    log-likelihood of the candidate's title as the answer to a prompt listing the user's last
    ``recent_items`` titles before the row's split target (per title token when ``length_normalize``)."""
    titles = item_titles(item_catalog, max_item_chars)
    title_tokens: dict[int, list[int]] = {}
    sequences = user_sequences.set_index("user_idx")
    histories = [
        split_input(sequences.at[int(u), "train_items"], sequences.at[int(u), "valid_target"], split)[-recent_items:]
        for u, split in zip(eval_candidates["user_idx"], eval_candidates["split"], strict=True)
    ]
    check_inputs_precede_targets(user_sequences, eval_candidates["user_idx"], eval_candidates["split"], histories,
                                 what="llm_zeroshot prompts")
    scores: list[list[float]] = [[] for _ in range(len(eval_candidates))]
    rows_by_user = pd.Series(range(len(eval_candidates))).groupby(eval_candidates["user_idx"].to_numpy())
    with torch.inference_mode():
        for _user, rows in tqdm(rows_by_user, desc="llm_zeroshot", unit="user", disable=not progress):
            for row in rows:
                candidates = eval_candidates["candidates"].iat[row]
                prompt = chat_prompt_ids(tokenizer, recent_items_message([titles[int(i)] for i in histories[row]]))
                for c in candidates:
                    if int(c) not in title_tokens:
                        title_tokens[int(c)] = text_ids(tokenizer, titles[int(c)])
                continuations = [title_tokens[int(c)] for c in candidates]
                result = score_continuations(model, prompt, continuations)
                values = result.mean() if length_normalize else result.logprob
                scores[row] = values.double().cpu().tolist()
    return scores
