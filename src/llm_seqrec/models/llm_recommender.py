"""The LoRA LLM recommender (LLM-TRSR and DMPO/S-DPO/SFT): a frozen causal LM with a PEFT LoRA adapter
that reads a prompt (a user's summary and recent item titles) and scores candidate items.

Two heads, chosen by ``RecommenderConfig.head``:

- ``yes_no`` (LLM-TRSR): the candidate's title closes the user turn and the model answers; the score is
  the softmax over the "Yes" and "No" logits at the answer position, p(Yes) = σ(logit_Yes − logit_No).
  Only those two rows of the output embedding are multiplied, never the vocabulary.
- ``likelihood`` (SFT, DMPO, S-DPO): the candidate's title is the answer; its sequence log-probability
  sums over the title tokens, computed at those positions only (``llm.scoring.score_continuations``).

Either way a prompt runs once and its candidates run as a batch of continuations of its KV cache,
and several prompts (``PromptBatch``: grouped by length, right-padded) can share one forward.
Only the adapter trains; artifacts hold its weights (about a million numbers for r = 8) and the
config, and the frozen backbone reloads from its source.

As a ``CandidateScorer`` it reads item ids: ``titles`` (item_idx -> title, given at construction or
to ``from_artifact``) turns them into the titles the prompts show. Its training procedures live in
``training.lora`` and ``training.preference``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Annotated, Literal

import torch
from annotated_types import Ge, Lt, MinLen
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from pydantic import ConfigDict
from torch import nn

from llm_seqrec.data.fingerprint import scorer_fingerprint
from llm_seqrec.llm.backbone import Backbone, check_backbone
from llm_seqrec.llm.prompts import SYSTEM, chat_prompt_ids, recent_items_message, text_ids
from llm_seqrec.llm.scoring import batch_next_token_logits, batch_score_continuations
from llm_seqrec.models.recommender import Queries

Head = Literal["yes_no", "likelihood"]
ANSWERS = ("Yes", "No")
_MARK = "\x00CANDIDATE\x00"  # stands for the candidate while the chat template is rendered


@dataclass(frozen=True)
class LoraSettings:
    """A LoRA adapter (PEFT) on the backbone; nested as ``lora`` in ``trsr`` and ``dmpo``, whose
    parameters validate it (the ``Annotated`` bounds are pydantic's)."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    r: Annotated[int, Ge(1)] = 8
    alpha: Annotated[int, Ge(1)] = 16
    dropout: Annotated[float, Ge(0), Lt(1)] = 0.05
    target_modules: Annotated[tuple[str, ...], MinLen(1)] = ("q_proj", "k_proj", "v_proj", "o_proj")

    def peft_config(self) -> LoraConfig:
        return LoraConfig(
            r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=list(self.target_modules)
        )


RecentItems = Annotated[int, Ge(1)]
SummaryTokens = Annotated[int, Ge(1)]


@dataclass(frozen=True)
class PromptBatch:
    """Prompts per forward (``trsr.prompt_batch``, ``dmpo.prompt_batch``), grouped by length and
    right-padded (``LLMRecommender.grouped_forward``): ``train`` in a training step (at most its batch's
    prompts) and the reference pass over training examples, ``score`` when scoring and validating. A
    compute setting, so not in the config, the artifact or the fingerprint: it moves scores by float
    rounding only (bounded in tests/models/test_prompt_batching.py), and 1 is exactly one prompt at a
    time. Defaults chosen by benchmarks/bench_lora.py on the 2-core CPU (README "LoRA prompt batching"):
    4 prompts per training forward ran 1.3-1.5x as fast as one at 8 layers (1.1x at 30); scoring, whose
    21 candidates already make a batch, gained nothing measurable in float32, so it stays one prompt at
    a time (bit for bit today's scores)."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    train: Annotated[int, Ge(1)] = 4
    score: Annotated[int, Ge(1)] = 1


@dataclass(frozen=True)
class PromptSettings:
    """The prompt's layout; its fields are ``trsr``'s and ``dmpo``'s parameters of the same names
    (whose defaults are these, but for dmpo's ``recent_items``)."""

    recent_items: RecentItems = 3  # titles shown, the most recent last
    use_summary: bool = True  # show the user's summary where one is given
    summary_tokens: SummaryTokens = 64  # a summary is cut to this many tokens, to keep prompts short


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


class LLMRecommender(nn.Module):
    """A frozen causal LM with a LoRA adapter, scoring candidate items after a prompt.

    ``forward(prompt_ids, candidate_ids)`` returns one number per candidate: the log-odds of "Yes"
    over "No" (``yes_no``) or the candidate's summed title log-probability (``likelihood``), with
    gradients into the adapter. ``scores`` turns them into ranking scores, ``score_candidates`` does
    so for item ids (through ``titles``). PEFT edits the backbone's modules in place, so a ``Backbone``
    serves one recommender. ``prompt_batch``: prompts per forward when training and scoring.
    """

    def __init__(self, backbone: Backbone, config: RecommenderConfig, titles: Mapping[int, str] | None = None,
                 prompt_batch: PromptBatch = PromptBatch()) -> None:
        super().__init__()
        check_backbone(config.backbone, backbone.name, backbone.n_layers)
        self.config = config
        self.prompt_batch = prompt_batch
        self.titles = titles  # item_idx -> title, for score_candidates
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
        return self.batch_forward([prompt], [candidates])

    def batch_forward(self, prompts: Sequence[Sequence[int]], candidates: Sequence[Sequence[Sequence[int]]]) -> torch.Tensor:
        """``forward`` of several prompts in one pass (``candidates[b]`` are prompt b's), flat in prompt order."""
        if self.config.head == "yes_no":
            logits = batch_next_token_logits(self.lm, prompts, candidates, self.answer_ids)
            return logits[:, 0] - logits[:, 1]
        return batch_score_continuations(self.lm, prompts, candidates).logprob

    def grouped_forward(
        self, prompts: Sequence[Sequence[int]], candidates: Sequence[Sequence[Sequence[int]]], batch: int
    ) -> list[torch.Tensor]:
        """``forward`` of each prompt, ``batch`` prompts per pass: prompts of similar length together
        (sorted by length, so little padding), the results in the given order. ``batch`` 1 is a lone
        ``forward`` per prompt, in the given order."""
        if batch < 1:
            raise ValueError(f"prompts per forward must be at least 1, got {batch}")
        order = list(range(len(prompts)))
        if batch > 1:
            order.sort(key=lambda i: len(prompts[i]))
        out: list[torch.Tensor | None] = [None] * len(prompts)
        for start in range(0, len(order), batch):
            group = order[start : start + batch]
            values = self.batch_forward([prompts[i] for i in group], [candidates[i] for i in group])
            for i, value in zip(group, values.split([len(candidates[i]) for i in group]), strict=True):
                out[i] = value
        return out

    def _ranking(self, values: torch.Tensor, candidates: Sequence[Sequence[int]]) -> torch.Tensor:
        values = values.double().cpu()
        if self.config.head == "yes_no":
            return torch.sigmoid(values)
        if self.config.length_normalize:
            values = values / torch.tensor([len(c) for c in candidates], dtype=torch.float64)
        return values

    @torch.no_grad()
    def scores(self, prompt: Sequence[int], candidates: Sequence[Sequence[int]]) -> torch.Tensor:
        """Ranking scores (float64, CPU): p(Yes) from the two-way softmax, or the title log-likelihood
        (per token when ``length_normalize``)."""
        return self._ranking(self(prompt, candidates), candidates)

    def score_candidates(self, queries: Queries, candidates: Sequence[Sequence[int]]) -> list[list[float]]:
        """``scores`` of each query's candidate items, in eval mode, ``prompt_batch.score`` prompts per pass:
        the prompt shows the query's history (its last ``recent_items``) and, where the config uses
        them, its summary."""
        if self.titles is None:
            raise ValueError("LLMRecommender.score_candidates needs the item titles (titles=...)")
        was_training = self.training
        self.eval()
        prompts = [self.prompt_ids([self.titles[int(i)] for i in queries.histories[row]], queries.summary(row))
                   for row in range(len(candidates))]
        continuations = [[self.candidate_ids(self.titles[int(c)]) for c in items] for items in candidates]
        with torch.no_grad():
            values = self.grouped_forward(prompts, continuations, self.prompt_batch.score)
        self.train(was_training)
        return [self._ranking(v, c).tolist() for v, c in zip(values, continuations, strict=True)]

    def fingerprint(self) -> str:
        """The backbone (named in the config, with its dtype), the head, prompt and LoRA settings, the
        adapter's weights, the system prompt and the titles; ``meta`` (provenance) is left out, and so
        is ``prompt_batch``: scores differ between batch sizes by float rounding only (bounded in
        tests/models/test_prompt_batching.py), so a cached row is as good as a re-scored one."""
        config = {k: v for k, v in self.config.to_dict().items() if k != "meta"}
        return scorer_fingerprint("LLMRecommender", config=config, dtype=self.backbone_dtype, system=SYSTEM,
                                  adapter=self.adapter_state_dict(), titles=self.titles)

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
    def from_artifact(cls, artifact: dict, backbone: Backbone, titles: Mapping[int, str] | None = None,
                      prompt_batch: PromptBatch = PromptBatch()) -> LLMRecommender:
        config = RecommenderConfig.from_dict({k: v for k, v in artifact["config"].items() if k != "peft"})
        model = cls(backbone, config, titles, prompt_batch)
        model.load_adapter_state_dict(artifact["state_dict"])
        return model.to(backbone.device).eval()
