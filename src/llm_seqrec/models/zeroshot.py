"""The zero-shot LLM: the frozen backbone, no training, as a ``CandidateScorer``.

A candidate's score is the log-likelihood of its title as the answer to a chat prompt listing the
user's last ``recent_items`` titles (per title token when ``length_normalize``), each candidate a
continuation of the prompt's KV cache (``llm.scoring.score_continuations``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from llm_seqrec.data.fingerprint import scorer_fingerprint
from llm_seqrec.llm.backbone import Backbone
from llm_seqrec.llm.prompts import chat_prompt_ids, recent_items_message, text_ids
from llm_seqrec.llm.scoring import score_continuations
from llm_seqrec.models.recommender import Queries


class ZeroShotLLM:
    def __init__(self, backbone: Backbone, titles: Mapping[int, str], recent_items: int, length_normalize: bool = True) -> None:
        self.model, self.tokenizer = backbone.model, backbone.tokenizer
        self.backbone_dtype = backbone.dtype_name
        self.backbone_name = backbone.name
        self.titles = titles
        self.recent_items = recent_items
        self.length_normalize = length_normalize
        self._title_ids: dict[int, list[int]] = {}

    def title_ids(self, item: int) -> list[int]:
        if item not in self._title_ids:
            self._title_ids[item] = text_ids(self.tokenizer, self.titles[item])
        return self._title_ids[item]

    def fingerprint(self) -> str:
        """The frozen backbone (name and dtype), the titles it shows and its two settings."""
        return scorer_fingerprint("ZeroShotLLM", backbone=self.backbone_name, dtype=self.backbone_dtype, titles=dict(self.titles),
                                  recent_items=self.recent_items, length_normalize=self.length_normalize)

    def score_candidates(self, queries: Queries, candidates: Sequence[Sequence[int]]) -> list[list[float]]:
        out = []
        with torch.inference_mode():
            for row, items in enumerate(candidates):
                recent = queries.histories[row][-self.recent_items :]
                prompt = chat_prompt_ids(self.tokenizer, recent_items_message([self.titles[int(i)] for i in recent]))
                result = score_continuations(self.model, prompt, [self.title_ids(int(c)) for c in items])
                values = result.mean() if self.length_normalize else result.logprob
                out.append(values.double().cpu().tolist())
        return out
