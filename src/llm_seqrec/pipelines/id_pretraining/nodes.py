"""id_pretraining nodes: train SASRec on item IDs, then export what later stages read from it; encode the
items' text with the frozen backbone and train ``sasrec_text`` on both."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from llm_seqrec.data.padding import left_pad
from llm_seqrec.data.schema import SPLITS, split_inputs
from llm_seqrec.evaluation.score_cache import ScoreCache
from llm_seqrec.evaluation.scoring import score_table
from llm_seqrec.llm.backbone import load_backbone
from llm_seqrec.llm.device import choose_device
from llm_seqrec.llm.item_embeddings import ItemEmbeddingCache, embed_catalog, encoding_dtype
from llm_seqrec.models.sasrec import SASRec
from llm_seqrec.models.sasrec_text import id_model_from_artifact
from llm_seqrec.params import BackboneParams, EvaluationParams, ItemEmbeddingParams, SASRecParams, SASRecTextParams, validate_section
from llm_seqrec.training import training_log
from llm_seqrec.training.id_model import train_sasrec as fit_sasrec
from llm_seqrec.training.id_model import train_sasrec_text as fit_sasrec_text


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


def extract_sasrec_text_item_embeddings(sasrec_text_model: dict) -> pd.DataFrame:
    """``sasrec_text``'s item table (ID and text views joined, items 1..I), which RA-Rec may align instead."""
    with torch.no_grad():
        table = id_model_from_artifact(sasrec_text_model).eval().item_vectors()[1:].float().numpy()
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


def embed_items(item_catalog: pd.DataFrame, llm_item_embedding_cache: ItemEmbeddingCache, backbone: dict,
                llm_item_embeddings: dict) -> pd.DataFrame:
    """``llm_item_embeddings``: every item's frozen-backbone vector, encoding only what the cache lacks."""
    settings = validate_section(ItemEmbeddingParams, llm_item_embeddings)
    loader = BackboneParams.model_validate(backbone).loader_kwargs()
    loader.update(layers=None, dtype=encoding_dtype(settings, loader["dtype"], loader["device"]))
    llm = load_backbone(**loader)
    depth = settings.layer or llm.n_layers
    return embed_catalog(llm, item_catalog, settings, llm_item_embedding_cache, [depth])[depth]


def train_sasrec_text(user_sequences: pd.DataFrame, item_catalog: pd.DataFrame, llm_item_embeddings: pd.DataFrame,
                      sasrec_text: dict, evaluation: dict) -> tuple[dict, pd.DataFrame]:
    """``sasrec_text_model`` and ``sasrec_text_training_log`` (``training.id_model.train_sasrec_text``)."""
    settings = validate_section(SASRecTextParams, sasrec_text)
    exclude_seen = EvaluationParams.model_validate(evaluation).exclude_seen
    model, result = fit_sasrec_text(user_sequences, llm_item_embeddings, int(item_catalog["item_idx"].max()), settings,
                                    exclude_seen)
    return model.to_artifact(), training_log("sasrec_text", result.history)


def score_sasrec_text(sasrec_text_model: dict, user_sequences: pd.DataFrame, eval_candidates: pd.DataFrame,
                      score_cache: ScoreCache, sasrec_text: dict, evaluation: dict) -> pd.DataFrame:
    """``sasrec_text_scores``, as ``score_sasrec``."""
    training = validate_section(SASRecTextParams, sasrec_text).training
    exclude_seen = EvaluationParams.model_validate(evaluation).exclude_seen
    model = id_model_from_artifact(sasrec_text_model).to(choose_device(training.device)).eval()
    return score_table(model, user_sequences, eval_candidates, exclude_seen=exclude_seen, batch_size=training.batch_size,
                       desc="sasrec_text", cache=score_cache)
