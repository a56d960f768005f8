"""id_pretraining nodes: train SASRec on item IDs, then export what later stages read from it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from llm_seqrec.data.padding import left_pad
from llm_seqrec.data.schema import SPLITS, split_inputs
from llm_seqrec.evaluation.score_cache import ScoreCache
from llm_seqrec.evaluation.scoring import score_table
from llm_seqrec.llm.device import choose_device
from llm_seqrec.models.sasrec import SASRec
from llm_seqrec.params import EvaluationParams, SASRecParams, validate_section
from llm_seqrec.training import training_log
from llm_seqrec.training.id_model import train_sasrec as fit_sasrec


def train_sasrec(
    user_sequences: pd.DataFrame, item_catalog: pd.DataFrame, sasrec: dict, evaluation: dict
) -> tuple[dict, pd.DataFrame]:
    """``sasrec_model`` and ``sasrec_training_log`` (``training.id_model.train_sasrec``)."""
    settings = validate_section(SASRecParams, sasrec)
    exclude_seen = EvaluationParams.model_validate(evaluation).exclude_seen
    model, result = fit_sasrec(user_sequences, int(item_catalog["item_idx"].max()), settings, exclude_seen)
    return model.to_artifact(), training_log("sasrec", result.history)


def extract_item_embeddings(sasrec_model: dict) -> pd.DataFrame:
    """The item ID embedding table (items 1..I), which later stages align into the LLM."""
    table = sasrec_model["state_dict"]["item_embedding.weight"][1:].float().numpy()
    return pd.DataFrame({"item_idx": np.arange(1, len(table) + 1, dtype=np.int64), "embedding": list(table)})


def compute_user_states(sasrec_model: dict, user_sequences: pd.DataFrame, sasrec: dict) -> pd.DataFrame:
    """Each user's state after the last input item of each split (valid: train items; test: + valid
    target), computed ``training.batch_size`` users at a time."""
    training = validate_section(SASRecParams, sasrec).training
    model = SASRec.from_artifact(sasrec_model).to(choose_device(training.device)).eval()
    frames = []
    for split in SPLITS:
        inputs, _ = split_inputs(user_sequences, split)
        with torch.no_grad():
            states = torch.cat([
                model.user_state(left_pad(inputs[i : i + training.batch_size], model.config.max_len).to(model.device)).cpu()
                for i in range(0, len(inputs), training.batch_size)
            ]).numpy()
        frames.append(pd.DataFrame({"user_idx": user_sequences["user_idx"].to_numpy(), "split": split, "state": list(states)}))
    return pd.concat(frames, ignore_index=True)


def score_sasrec(
    sasrec_model: dict, user_sequences: pd.DataFrame, eval_candidates: pd.DataFrame, score_cache: ScoreCache, sasrec: dict,
    evaluation: dict,
) -> pd.DataFrame:
    """``sasrec_scores``: every user, both splits, full ranking and the sampled protocol, scored
    ``training.batch_size`` users at a time (the batches ``compute_user_states`` computes)."""
    training = validate_section(SASRecParams, sasrec).training
    exclude_seen = EvaluationParams.model_validate(evaluation).exclude_seen
    model = SASRec.from_artifact(sasrec_model).to(choose_device(training.device)).eval()
    return score_table(model, user_sequences, eval_candidates, exclude_seen=exclude_seen, batch_size=training.batch_size,
                       desc="sasrec", cache=score_cache)
