"""Bi-Tuning's data and model assembly (no Kedro): the users a model trains and validates on, and a
model built afresh or restored from its adapter, tied to the frozen inputs it was trained with.

A training example is a user's training items before the last one, with the last as target (the
``train`` cutoff of the summarization stage, so its summaries fit); with summaries in use, only the
users summarised there (``summarization.train_users``). Validation is a seeded sample of users at the
``valid`` cutoff; with summaries, of the users summarised there (the LLM user sample).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

from llm_seqrec.data.fingerprint import weights_fingerprint
from llm_seqrec.data.leakage import check_inputs_precede_targets
from llm_seqrec.data.schema import split_inputs
from llm_seqrec.llm.backbone import Backbone
from llm_seqrec.models.bituning import BiTuning, BiTuningConfig
from llm_seqrec.models.bituning_prompts import BiTuningRanker, PromptConfig, Prompts
from llm_seqrec.models.mformer import MFormerConfig, MFormerSettings
from llm_seqrec.models.recommender import Queries
from llm_seqrec.models.sasrec_text import id_model_from_artifact

Summaries = Mapping[tuple[int, str], str]  # (user_idx, cutoff) -> summary


class UserSet:
    """Users with prompt ids, item histories and targets, in a fixed order."""

    def __init__(self, frame: pd.DataFrame, prompts: list[list[int]], histories: list[list[int]], targets: list[int]) -> None:
        self.frame, self.prompts, self.histories, self.targets = frame, prompts, histories, targets

    def __len__(self) -> int:
        return len(self.targets)


def summaries_by_cutoff(user_summaries: pd.DataFrame, use_summary: bool) -> dict[tuple[int, str], str] | None:
    """(user_idx, cutoff) -> summary, or None when summaries are not in the prompts."""
    if not use_summary:
        return None
    return {
        (int(u), str(c)): str(s)
        for u, c, s in zip(user_summaries["user_idx"], user_summaries["cutoff"], user_summaries["summary"], strict=True)
    }


def _user_set(frame: pd.DataFrame, prompts: Prompts, summaries: Summaries | None, cutoff: str,
              histories: list[list[int]], targets: list[int]) -> UserSet:
    texts = tuple(summaries.get((int(u), cutoff)) for u in frame["user_idx"]) if summaries is not None else None
    queries = Queries(tuple(int(u) for u in frame["user_idx"]), cutoff, tuple(map(tuple, histories)), texts)
    return UserSet(frame, prompts.users(queries, summaries is not None), histories, targets)


def training_examples(user_sequences: pd.DataFrame, prompts: Prompts, summaries: Summaries | None) -> UserSet:
    """One example per user with at least two training items: the items before the last, and the last.
    With summaries in use, only the users summarised at that cutoff (``summarization.train_users``)."""
    frame = user_sequences[user_sequences["train_items"].map(len) >= 2]
    if summaries is not None:
        frame = frame[[(int(u), "train") in summaries for u in frame["user_idx"]]]
    if frame.empty:
        raise ValueError(
            "no Laser training examples: users need two training items"
            + (" and a 'train' summary (summarization.train_users)" if summaries is not None else "")
        )
    histories = [[int(i) for i in items[:-1]] for items in frame["train_items"]]
    targets = [int(items[-1]) for items in frame["train_items"]]
    check_inputs_precede_targets(frame, frame["user_idx"], "train", histories, targets=targets,
                                 what="Laser training users")
    return _user_set(frame, prompts, summaries, "train", histories, targets)


def validation_users(user_sequences: pd.DataFrame, prompts: Prompts, summaries: Summaries | None,
                     eval_users: int | None, seed: int) -> UserSet:
    """The seeded validation sample (``eval_users``, all when None) at the valid cutoff. With summaries,
    only users summarised there (the LLM user sample) can be shown theirs."""
    frame = user_sequences
    if summaries is not None:
        frame = frame[[(int(u), "valid") in summaries for u in frame["user_idx"]]]
    if eval_users is not None and eval_users < len(frame):
        chosen = np.random.default_rng(seed).choice(len(frame), eval_users, replace=False)
        frame = frame.iloc[np.sort(chosen)]
    frame = frame.reset_index(drop=True)
    inputs, targets = split_inputs(frame, "valid")
    check_inputs_precede_targets(frame, frame["user_idx"], "valid", inputs, targets=targets,
                                 what="Laser validation users")
    return _user_set(frame, prompts, summaries, "valid", inputs, targets)


def aligned_table(aligned_item_embeddings: pd.DataFrame, n_items: int) -> torch.Tensor:
    """RA-Rec's aligned item embeddings as ``[n_items + 1, hidden]`` (row 0, padding, zero)."""
    frame = aligned_item_embeddings.sort_values("item_idx")
    if frame["item_idx"].tolist() != list(range(1, n_items + 1)):
        raise ValueError(f"aligned_item_embeddings must hold items 1..{n_items} of item_catalog once each: "
                         "re-run `kedro run --pipelines=alignment`")
    table = torch.from_numpy(np.stack(frame["embedding"].to_numpy()).astype(np.float32))
    return torch.cat([torch.zeros(1, table.shape[1]), table])


def _titles(item_catalog: pd.DataFrame) -> dict[int, str]:
    return dict(zip(item_catalog["item_idx"].astype(int), item_catalog["title"].astype(str), strict=True))


def build(llm: Backbone, item_catalog: pd.DataFrame, sasrec_model: dict, aligned_item_embeddings: pd.DataFrame, *,
          prompts: PromptConfig, mformer: MFormerSettings | None, rec_size: int, n_suffix_tokens: int,
          temperature: float, balance_weight: float) -> tuple[BiTuning, Prompts, dict]:
    """A new model (its initial weights from torch's global generator, so seed first), its prompts, and
    the fingerprints of the frozen inputs it reads, for its adapter. ``mformer`` None: no prefix, no ID model."""
    user_prompts = Prompts(prompts, llm.tokenizer, _titles(item_catalog))
    id_model = id_model_from_artifact(sasrec_model) if mformer is not None else None
    config = BiTuningConfig(
        n_items=user_prompts.n_items,
        llm_hidden_size=llm.hidden_size,
        backbone=llm.name,
        rec_size=rec_size,
        n_suffix_tokens=n_suffix_tokens,
        temperature=temperature,
        balance_weight=balance_weight,
        mformer=MFormerConfig.sized(mformer, id_model.config.hidden_size, llm.hidden_size) if id_model is not None else None,
        aligned_id_tokens=prompts.aligned_id_tokens,
    )
    aligned = aligned_table(aligned_item_embeddings, user_prompts.n_items) if config.aligned_id_tokens else None
    net = BiTuning(config, llm.model, user_prompts.items(), id_model.to(llm.device) if id_model is not None else None,
                   aligned)
    frozen = {
        "id_model": weights_fingerprint(sasrec_model["state_dict"]) if id_model is not None else None,
        "id_model_class": type(id_model).__name__ if id_model is not None else None,  # SASRec or SASRecText
        "aligned_items": weights_fingerprint({"table": aligned}) if aligned is not None else None,
    }
    return net, user_prompts, frozen


def restore(adapter: dict, llm: Backbone, item_catalog: pd.DataFrame, sasrec_model: dict,
            aligned_item_embeddings: pd.DataFrame, **ranker_settings) -> BiTuningRanker:
    """The trained model of an adapter as a ranker (``ranker_settings``: its batch sizes and progress),
    from the backbone, the catalogue, SASRec and the aligned item embeddings; the frozen inputs must be
    the ones it was trained with."""
    config = adapter["config"]
    prompts = Prompts(PromptConfig.from_dict(config["prompts"]), llm.tokenizer, _titles(item_catalog))
    stale = "this Laser adapter was trained on another {} version than the current one: re-run `kedro run --pipelines=bituning`"
    id_model = aligned = None
    if config["id_model"] is not None:
        if config["id_model"] != weights_fingerprint(sasrec_model["state_dict"]):
            raise ValueError(stale.format("sasrec_model"))
        id_model = id_model_from_artifact(sasrec_model).to(llm.device)
    if config["aligned_items"] is not None:
        aligned = aligned_table(aligned_item_embeddings, prompts.n_items)
        if config["aligned_items"] != weights_fingerprint({"table": aligned}):
            raise ValueError(stale.format("aligned_item_embeddings"))
    net = BiTuning.from_artifact(adapter, llm.model, llm.name, prompts.items(), id_model, aligned)
    return BiTuningRanker(net, prompts, bool(config["use_summary"]), llm.dtype_name, **ranker_settings)


__all__ = ["UserSet", "aligned_table", "build", "restore", "summaries_by_cutoff", "training_examples", "validation_users"]
