"""The LoRA LLM recommender (LLM-TRSR and DMPO/S-DPO/SFT): a frozen causal LM with a PEFT LoRA adapter
that reads a prompt (a user's summary and recent item titles) and scores candidate items.

Two heads, chosen by ``RecommenderConfig.head``:

- ``yes_no`` (LLM-TRSR): the candidate's title closes the user turn and the model answers; the score is
  the softmax over the "Yes" and "No" logits at the answer position, p(Yes) = σ(logit_Yes − logit_No).
  Only those two rows of the output embedding are multiplied, never the vocabulary.
- ``likelihood`` (SFT, DMPO, S-DPO): the candidate's title is the answer; its sequence log-probability
  sums over the title tokens, computed at those positions only (``llm.scoring.score_continuations``).

Either way a prompt runs once and its candidates run as a batch of continuations of its KV cache.
Only the adapter trains; artifacts hold its weights (about a million numbers for r = 8) and the
config, and the frozen backbone reloads from its source.

Below the module: training examples, candidate scoring for the evaluation protocol, and the three
training procedures (yes/no BCE, SFT, preference optimisation against cached reference log-probs),
all through the shared ``training.fit`` loop. No Kedro here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from torch import nn
from tqdm.auto import tqdm

from llm_seqrec.data.leakage import check_inputs_precede_targets
from llm_seqrec.data.schema import split_input
from llm_seqrec.evaluation.metrics import metrics_from_ranks
from llm_seqrec.evaluation.protocol import llm_user_sample, sampled_rows
from llm_seqrec.llm.backbone import Backbone
from llm_seqrec.llm.prompts import SYSTEM, chat_prompt_ids, recent_items_message, text_ids
from llm_seqrec.llm.scoring import score_continuations
from llm_seqrec.models.losses import PREFERENCE_LOSSES, yes_no_bce
from llm_seqrec.training import TrainingConfig
from llm_seqrec.training import FitResult, fit

Head = Literal["yes_no", "likelihood"]
ANSWERS = ("Yes", "No")
_MARK = "\x00CANDIDATE\x00"  # stands for the candidate while the chat template is rendered


@dataclass(frozen=True)
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    def peft_config(self) -> LoraConfig:
        return LoraConfig(
            r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=list(self.target_modules)
        )


@dataclass(frozen=True)
class PromptSettings:
    recent_items: int = 3  # titles shown, the most recent last
    use_summary: bool = True  # show the user's summary where one is given
    summary_tokens: int = 64  # a summary is cut to this many tokens, to keep prompts short


@dataclass(frozen=True)
class RecommenderConfig:
    head: Head
    backbone: str  # ``Backbone.name``: an adapter only makes sense on the weights it was trained on
    lora: LoraSettings = LoraSettings()
    prompt: PromptSettings = PromptSettings()
    length_normalize: bool = True  # likelihood head: rank by log-probability per title token
    meta: dict = field(default_factory=dict)  # provenance (model name, data, training), not used to compute

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> RecommenderConfig:
        lora = dict(data.get("lora", {}))
        if "target_modules" in lora:
            lora["target_modules"] = tuple(lora["target_modules"])
        return cls(**{**data, "lora": LoraSettings(**lora), "prompt": PromptSettings(**data.get("prompt", {}))})


def next_token_logits(
    model: nn.Module, prompt: Sequence[int], continuations: Sequence[Sequence[int]], token_ids: Sequence[int]
) -> torch.Tensor:
    """Logits ``[n, len(token_ids)]`` of ``token_ids`` at the position after each whole continuation.

    The prompt runs once and its KV cache is repeated over the right-padded continuations, as in
    ``llm.scoring.score_continuations`` (which returns the continuations' own log-probabilities, not
    the next token's); only the output-embedding rows of ``token_ids`` are multiplied. Works with
    gradients and through a PEFT wrapper.
    """
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = lm.get_decoder(), lm.get_output_embeddings()
    device = head.weight.device
    n = len(continuations)
    lengths = torch.tensor([len(c) for c in continuations], device=device)
    if n == 0 or int(lengths.min()) < 1 or len(prompt) == 0:
        raise ValueError("next_token_logits needs a non-empty prompt and non-empty continuations")
    width = int(lengths.max())
    tokens = torch.zeros(n, width, dtype=torch.long, device=device)
    for i, ids in enumerate(continuations):
        tokens[i, : len(ids)] = torch.as_tensor(ids, dtype=torch.long, device=device)
    prompt_ids = torch.as_tensor(prompt, dtype=torch.long, device=device).view(1, -1)
    prompt_len = prompt_ids.shape[1]
    cache = decoder(input_ids=prompt_ids, use_cache=True).past_key_values
    cache.batch_repeat_interleave(n)
    present = torch.arange(width, device=device) < lengths.unsqueeze(1)
    out = decoder(
        input_ids=tokens,
        attention_mask=torch.cat([present.new_ones(n, prompt_len), present], dim=1).long(),
        position_ids=(prompt_len + torch.arange(width, device=device)).expand(n, -1),
        past_key_values=cache,
        use_cache=True,
    )
    last = out.last_hidden_state[torch.arange(n, device=device), lengths - 1]
    index = torch.as_tensor(token_ids, dtype=torch.long, device=device)
    logits = last @ head.weight[index].T
    if getattr(head, "bias", None) is not None:
        logits = logits + head.bias[index]
    return logits.float()


class LLMRecommender(nn.Module):
    """A frozen causal LM with a LoRA adapter, scoring candidate items after a prompt.

    ``forward(prompt_ids, candidate_ids)`` returns one number per candidate: the log-odds of "Yes"
    over "No" (``yes_no``) or the candidate's summed title log-probability (``likelihood``), with
    gradients into the adapter. ``scores`` turns them into ranking scores.
    PEFT edits the backbone's modules in place, so a ``Backbone`` serves one recommender.
    """

    def __init__(self, backbone: Backbone, config: RecommenderConfig) -> None:
        super().__init__()
        if config.backbone != backbone.name:
            raise ValueError(f"the adapter was made for backbone {config.backbone!r}, not {backbone.name!r}")
        self.config = config
        self.backbone_dtype = backbone.dtype_name
        self.tokenizer = backbone.tokenizer
        self.lm = get_peft_model(backbone.model, config.lora.peft_config())
        self.answer_ids = [text_ids(self.tokenizer, answer)[0] for answer in ANSWERS]
        # The chat template around the user turn, rendered once: the yes/no head's prompt stops
        # where the candidate starts and the candidate continues with the turn's closing tokens.
        rendered = self.tokenizer.apply_chat_template(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": _MARK}],
            add_generation_prompt=True,
            tokenize=False,
        )
        self._turn_open, turn_close = rendered.split(_MARK)
        self._turn_close_ids = text_ids(self.tokenizer, turn_close)
        self._candidate_cache: dict[str, list[int]] = {}

    # ---- prompts
    def prompt_ids(self, history_titles: Sequence[str], summary: str | None = None) -> list[int]:
        """The shared prefix of every candidate: the summary (if used and given) and the last
        ``recent_items`` titles, oldest first."""
        titles = list(history_titles)[-self.config.prompt.recent_items :]
        lines = []
        if summary and self.config.prompt.use_summary:
            lines.append(f"A summary of my preferences: {self._cut_summary(summary)}")
        if self.config.head == "likelihood":
            return chat_prompt_ids(self.tokenizer, "\n".join([*lines, recent_items_message(titles)]))
        listing = "\n".join(f"{i}. {title}" for i, title in enumerate(titles, start=1))
        lines += [
            f"These are the items I chose most recently, oldest first:\n{listing}",
            "Will I choose the following item next? Answer Yes or No.",
            "Candidate item:\n",
        ]
        return text_ids(self.tokenizer, self._turn_open + "\n".join(lines))

    def candidate_ids(self, title: str) -> list[int]:
        """A candidate's continuation: its title, then (yes/no head) the turn's end up to the answer."""
        if title not in self._candidate_cache:
            ids = text_ids(self.tokenizer, title)
            self._candidate_cache[title] = ids + self._turn_close_ids if self.config.head == "yes_no" else ids
        return self._candidate_cache[title]

    def _cut_summary(self, summary: str) -> str:
        ids, budget = text_ids(self.tokenizer, summary), self.config.prompt.summary_tokens
        return summary if len(ids) <= budget else self.tokenizer.decode(ids[:budget])

    # ---- heads
    def forward(self, prompt: Sequence[int], candidates: Sequence[Sequence[int]]) -> torch.Tensor:
        if self.config.head == "yes_no":
            logits = next_token_logits(self.lm, prompt, candidates, self.answer_ids)
            return logits[:, 0] - logits[:, 1]
        return score_continuations(self.lm, prompt, candidates).logprob

    @torch.no_grad()
    def scores(self, prompt: Sequence[int], candidates: Sequence[Sequence[int]]) -> torch.Tensor:
        """Ranking scores (float64, CPU): p(Yes) from the two-way softmax, or the title log-likelihood
        (per token when ``length_normalize``)."""
        values = self(prompt, candidates).double().cpu()
        if self.config.head == "yes_no":
            return torch.sigmoid(values)
        if self.config.length_normalize:
            values = values / torch.tensor([len(c) for c in candidates], dtype=torch.float64)
        return values

    # ---- the adapter
    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The adapter's weights under PEFT's names (as ``save_pretrained`` writes them)."""
        return get_peft_model_state_dict(self.lm)

    def load_adapter_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        expected = set(get_peft_model_state_dict(self.lm))
        if set(state_dict) != expected:
            missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
            raise KeyError(f"adapter weights do not match: missing {missing[:3]}, unexpected {unexpected[:3]}")
        set_peft_model_state_dict(self.lm, dict(state_dict))

    def to_artifact(self) -> dict:
        """``{"config", "state_dict"}`` for ``datasets.PeftAdapterDataset``: PEFT's adapter config
        (so ``PeftModel.from_pretrained`` loads the folder too) and this recommender's config."""
        peft = {k: (sorted(v) if isinstance(v, set) else v) for k, v in self.lm.peft_config["default"].to_dict().items()}
        state = {k: v.detach().to("cpu", copy=True) for k, v in self.adapter_state_dict().items()}
        return {"config": {"peft": json.loads(json.dumps(peft, default=str)), **self.config.to_dict()}, "state_dict": state}

    @classmethod
    def from_artifact(cls, artifact: dict, backbone: Backbone) -> LLMRecommender:
        config = RecommenderConfig.from_dict({k: v for k, v in artifact["config"].items() if k != "peft"})
        model = cls(backbone, config)
        model.load_adapter_state_dict(artifact["state_dict"])
        return model.to(backbone.device).eval()


# ---------------------------------------------------------------- data


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


def sample_negatives(n_items: int, excluded: set[int], k: int, generator: torch.Generator) -> tuple[int, ...]:
    """``k`` distinct items in 1..n_items outside ``excluded`` (the user's own input and target items)."""
    if n_items - len(excluded) < k:
        raise ValueError(f"cannot draw {k} negatives from {n_items} items, {len(excluded)} of which are the user's")
    chosen: list[int] = []
    while len(chosen) < k:
        for item in torch.randint(1, n_items + 1, (2 * k,), generator=generator).tolist():
            if item not in excluded and item not in chosen and len(chosen) < k:
                chosen.append(item)
    return tuple(chosen)


def summaries_by_cutoff(user_summaries: pd.DataFrame | None) -> dict[tuple[int, str], str]:
    """(user_idx, cutoff) -> summary text, from the summarization stage's ``user_summaries``."""
    if user_summaries is None or user_summaries.empty:
        return {}
    columns = (user_summaries["user_idx"], user_summaries["cutoff"], user_summaries["summary"])
    return {(int(u), c): s for u, c, s in zip(*columns, strict=True)}


def data_fingerprint(*parts: object) -> str:
    """A short hash of JSON-able training data, so a checkpoint resumes only on the same data."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def adapter_fingerprint(state_dict: Mapping[str, torch.Tensor]) -> str:
    """A short hash of adapter weights: names the reference (SFT) state that cached log-probs came from."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        digest.update(name.encode())
        digest.update(state_dict[name].detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------- scoring for the evaluation protocol


def llm_sample_rows(
    eval_candidates: pd.DataFrame, user_sequences: pd.DataFrame, n_users: int | None, seed: int
) -> pd.DataFrame:
    """The shared candidate rows (both splits) of the LLM user sample, which every LLM model scores."""
    users = llm_user_sample(user_sequences, n_users, seed)
    return eval_candidates[eval_candidates["user_idx"].isin(users)].reset_index(drop=True)


def validation_rows(rows: pd.DataFrame, n_users: int | None, seed: int) -> pd.DataFrame:
    """The validation-split rows of a seeded ``n_users`` of ``rows`` (all when None), for early stopping."""
    valid = rows[rows["split"] == "valid"]
    if n_users is not None and n_users < len(valid):
        valid = valid.iloc[np.sort(np.random.default_rng(seed).choice(len(valid), n_users, replace=False))]
    return valid.reset_index(drop=True)


def score_candidates(
    model: LLMRecommender,
    titles: Mapping[int, str],
    user_sequences: pd.DataFrame,
    rows: pd.DataFrame,
    summaries: Mapping[tuple[int, str], str],
    progress: bool = False,
    desc: str = "scoring",
) -> list[list[float]]:
    """Scores of every candidate of every ``eval_candidates`` row (aligned with it): the prompt shows
    the row's split input (never the target or later) and the user's summary at that cutoff."""
    sequences = user_sequences.set_index("user_idx")
    histories = [
        split_input(sequences.at[int(user), "train_items"], sequences.at[int(user), "valid_target"], split)
        for user, split in zip(rows["user_idx"], rows["split"], strict=True)
    ]
    check_inputs_precede_targets(user_sequences, rows["user_idx"], rows["split"], histories, what=f"{desc} prompts")
    was_training = model.training
    model.eval()
    out = []
    for user, split, candidates, history in tqdm(
        zip(rows["user_idx"], rows["split"], rows["candidates"], histories, strict=True),
        total=len(rows), desc=desc, unit="row", disable=not progress,
    ):
        prompt = model.prompt_ids([titles[int(i)] for i in history], summaries.get((int(user), split)))
        out.append(model.scores(prompt, [model.candidate_ids(titles[int(c)]) for c in candidates]).tolist())
    model.train(was_training)
    return out


def sampled_ndcg5(
    model: LLMRecommender,
    titles: Mapping[int, str],
    user_sequences: pd.DataFrame,
    rows: pd.DataFrame,
    summaries: Mapping[tuple[int, str], str],
) -> float:
    """Sampled-protocol NDCG@5 over ``rows``: the early-stopping metric of every training procedure here."""
    table = sampled_rows(score_candidates(model, titles, user_sequences, rows, summaries), rows)
    return metrics_from_ranks(table["rank"].to_numpy(), [5], "sampled", table["n_ranked"].to_numpy())["ndcg@5"]


# ---------------------------------------------------------------- training procedures


def _prompts(model: LLMRecommender, examples: Sequence[Example], titles: Mapping[int, str]) -> list[list[int]]:
    return [model.prompt_ids([titles[i] for i in ex.history], ex.summary) for ex in examples]


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[list[int]]:
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
    per epoch, BCE on p(Yes). A batch is ``training.batch_size`` prompts."""
    prompts = _prompts(model, examples, titles)
    excluded = [{*ex.history, ex.target} for ex in examples]

    def make_batches(epoch: int, generator: torch.Generator) -> Iterator[list[dict]]:
        for rows in _batches(len(examples), training.batch_size, generator):
            batch = []
            for r in rows:
                items = [examples[r].target, *sample_negatives(n_items, excluded[r], negatives, generator)]
                batch.append({
                    "prompt": prompts[r],
                    "candidates": [model.candidate_ids(titles[i]) for i in items],
                    "labels": torch.tensor([1.0] + [0.0] * negatives),
                })
            yield batch

    def loss_fn(m: LLMRecommender, batch: list[dict]) -> torch.Tensor:
        log_odds = torch.cat([m(ex["prompt"], ex["candidates"]) for ex in batch])
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
    title token."""
    prompts = _prompts(model, examples, titles)
    answers = [model.candidate_ids(titles[ex.target]) for ex in examples]

    def make_batches(epoch: int, generator: torch.Generator) -> Iterator[list[dict]]:
        for rows in _batches(len(examples), training.batch_size, generator):
            yield [{"prompt": prompts[r], "answer": answers[r]} for r in rows]

    def loss_fn(m: LLMRecommender, batch: list[dict]) -> torch.Tensor:
        return torch.stack([-m(ex["prompt"], [ex["answer"]])[0] / len(ex["answer"]) for ex in batch]).mean()

    return fit(model, loss_fn, make_batches, validate, training, name, run_config)


@torch.no_grad()
def reference_logprobs(
    model: LLMRecommender, examples: Sequence[Example], titles: Mapping[int, str], progress: bool = False
) -> torch.Tensor:
    """``[N, 1 + k]`` summed answer log-probabilities of each example's positive then its fixed
    negatives under ``model`` as it is now, in eval mode (no dropout). Computed once from the SFT
    adapter, before preference training changes it, this is πref: the cache replaces the frozen
    copy that recomputing the reference at every step would need."""
    was_training = model.training
    model.eval()
    prompts = _prompts(model, examples, titles)
    out = torch.stack([
        model(prompt, [model.candidate_ids(titles[i]) for i in (ex.target, *ex.negatives)]).float().cpu()
        for prompt, ex in tqdm(list(zip(prompts, examples, strict=True)), desc="reference log-probs", disable=not progress)
    ])
    model.train(was_training)
    return out


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
    the positive's per-token negative log-likelihood."""
    if len({len(ex.negatives) for ex in examples}) != 1 or not examples[0].negatives:
        raise ValueError("preference training needs the same number (k >= 1) of negatives in every example")
    if reference.shape != (len(examples), 1 + len(examples[0].negatives)):
        raise ValueError(f"reference log-probs {tuple(reference.shape)} do not match the examples")
    preference_loss = PREFERENCE_LOSSES[loss]
    prompts = _prompts(model, examples, titles)
    candidates = [[model.candidate_ids(titles[i]) for i in (ex.target, *ex.negatives)] for ex in examples]

    def make_batches(epoch: int, generator: torch.Generator) -> Iterator[list[dict]]:
        for rows in _batches(len(examples), training.batch_size, generator):
            yield [{"prompt": prompts[r], "candidates": candidates[r], "reference": reference[r]} for r in rows]

    def loss_fn(m: LLMRecommender, batch: list[dict]) -> torch.Tensor:
        policy = torch.stack([m(ex["prompt"], ex["candidates"]) for ex in batch])
        ref = torch.stack([ex["reference"] for ex in batch]).to(policy)
        value = preference_loss(policy[:, 0], policy[:, 1:], ref[:, 0], ref[:, 1:], beta)
        if sft_weight:
            n_tokens = torch.tensor([len(ex["candidates"][0]) for ex in batch], dtype=policy.dtype, device=policy.device)
            value = value + sft_weight * (-policy[:, 0] / n_tokens).mean()
        return value

    return fit(model, loss_fn, make_batches, validate, training, name, run_config)
