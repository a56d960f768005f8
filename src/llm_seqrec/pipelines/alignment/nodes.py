"""alignment nodes: RA-Rec's tailored samples, the aligner's training, its aligned item embeddings and
its recommendations for the shared evaluation (model ``ra_rec``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from llm_seqrec.data.alignment_samples import build_alignment_samples
from llm_seqrec.evaluation.protocol import llm_user_sample
from llm_seqrec.evaluation.score_cache import ScoreCache
from llm_seqrec.evaluation.scoring import score_table
from llm_seqrec.llm.backbone import Backbone, check_training_device, load_backbone
from llm_seqrec.models.aligner import IDAligner
from llm_seqrec.params import AlignmentParams, BackboneParams, EvaluationParams, validate_section
from llm_seqrec.training.alignment import load_ra_rec
from llm_seqrec.training.alignment import train_aligner as fit_aligner

EMBEDDING_COLUMNS = ["item_idx", "item_id", "title", "embedding"]


def make_alignment_samples(user_sequences: pd.DataFrame, item_catalog: pd.DataFrame, alignment: dict) -> pd.DataFrame:
    """``alignment_samples``: the tailored (history, target) training samples."""
    params = validate_section(AlignmentParams, alignment)
    return build_alignment_samples(
        user_sequences,
        item_catalog,
        n_samples=params.samples,
        history_items=params.history_items,
        length_buckets=params.length_buckets,
        popularity_buckets=params.popularity_buckets,
        overlap_field=params.overlap_field,
        max_word_df=params.max_word_df,
        seed=params.seed,
    )


def _backbone(backbone: dict, params: AlignmentParams) -> Backbone:
    """The frozen LLM at ``alignment.layers``, where the aligner trains (``training.device``)."""
    return check_training_device(load_backbone(**BackboneParams.model_validate(backbone).loader_kwargs(params.layers)),
                                 params.training.device)


def train_aligner(
    alignment_samples: pd.DataFrame,
    user_sequences: pd.DataFrame,
    item_catalog: pd.DataFrame,
    id_item_embeddings: pd.DataFrame,
    sasrec_text_item_embeddings: pd.DataFrame,
    alignment: dict,
    backbone: dict,
    evaluation: dict,
) -> tuple[dict, pd.DataFrame]:
    """``aligner_model`` and ``ra_rec_training_log`` (``training.alignment.train_aligner``), aligning the item
    table of the ID model ``alignment.id_model`` names (both are inputs: a Kedro pipeline cannot depend on a
    parameter)."""
    params = validate_section(AlignmentParams, alignment)
    exclude_seen = EvaluationParams.model_validate(evaluation).exclude_seen
    llm = _backbone(backbone, params)
    table = {"sasrec": id_item_embeddings, "sasrec_text": sasrec_text_item_embeddings}[params.id_model]
    return fit_aligner(alignment_samples, user_sequences, item_catalog, table, llm, params, exclude_seen)


def export_aligned_item_embeddings(aligner_model: dict, item_catalog: pd.DataFrame) -> pd.DataFrame:
    """``aligned_item_embeddings``: every item's ID embedding mapped into the LLM's input space (p^(0))."""
    aligner = IDAligner.from_artifact({"config": aligner_model["config"]["aligner"], "state_dict": aligner_model["state_dict"]})
    with torch.no_grad():
        table = aligner.aligned_items()[1:].numpy().astype(np.float32)
    catalog = item_catalog.sort_values("item_idx")
    if catalog["item_idx"].tolist() != list(range(1, len(table) + 1)):
        raise ValueError("item_catalog does not hold the items the aligner was trained on")
    return pd.DataFrame({
        "item_idx": catalog["item_idx"].to_numpy(dtype=np.int64),
        "item_id": catalog["item_id"].astype(str).to_numpy(),
        "title": catalog["title"].astype(str).to_numpy(),
        "embedding": list(table),
    }, columns=EMBEDDING_COLUMNS)


def score_ra_rec(
    aligner_model: dict,
    user_sequences: pd.DataFrame,
    item_catalog: pd.DataFrame,
    eval_candidates: pd.DataFrame,
    score_cache: ScoreCache,
    alignment: dict,
    backbone: dict,
    evaluation: dict,
) -> pd.DataFrame:
    """``ra_rec_scores``: on the LLM user sample, ``evaluation.llm_splits``, full ranking over all items and the
    sampled protocol on ``eval_candidates`` (one LLM pass per user and split serves both; the model
    passes ``eval_batch_size`` users at a time, then ranks them all at once)."""
    params = validate_section(AlignmentParams, alignment)
    eval_params = EvaluationParams.model_validate(evaluation)
    llm = _backbone(backbone, params)
    model = load_ra_rec(aligner_model, llm, item_catalog, params.eval_batch_size, eval_params.progress)
    users = llm_user_sample(user_sequences, eval_params.llm_user_sample, eval_params.seed)
    return score_table(model, user_sequences, eval_candidates, exclude_seen=eval_params.exclude_seen, users=users,
                       splits=eval_params.llm_splits, desc="ra_rec queries", cache=score_cache)
