"""Nodes of a Bi-Tuning family (``laser``, or ``fusion``): each validates its parameter section, loads
the backbone and calls one procedure of ``training.bituning``.

The family's parameter section arrives as the node's ``laser`` input (``params:laser`` or
``params:fusion``); ``model`` names the model of the family whose settings apply (the full model, an
ablation, or the preference-tuned model).
"""

from __future__ import annotations

import pandas as pd

from llm_seqrec.evaluation.protocol import llm_user_sample
from llm_seqrec.evaluation.score_cache import ScoreCache
from llm_seqrec.llm.backbone import Backbone, check_training_device, load_backbone
from llm_seqrec.params import BITUNING_FAMILIES, BackboneParams, EvaluationParams, LaserModelParams
from llm_seqrec.training.bituning import preference_tune_bituning, score_bituning, train_bituning


def train_laser(user_sequences: pd.DataFrame, item_catalog: pd.DataFrame, sasrec_model: dict, sasrec_text_model: dict,
                user_summaries: pd.DataFrame, aligned_item_embeddings: pd.DataFrame, laser: dict, evaluation: dict,
                backbone: dict, *, model: str, family: str = "laser") -> tuple[dict, pd.DataFrame]:
    """Model ``model`` of ``family`` trained in its two stages: its adapter and training log."""
    params = BITUNING_FAMILIES[family].model_validate(laser).model(model)
    exclude_seen = EvaluationParams.model_validate(evaluation).exclude_seen
    # id_model names the artifact handed over as the frozen ID model and layers the backbone's depth
    # (``_backbone``), not settings of the training
    settings = {name: getattr(params, name) for name in LaserModelParams.model_fields if name not in ("id_model", "layers")}
    id_model = _id_model(params, sasrec_model, sasrec_text_model)
    return train_bituning(_backbone(backbone, params), model, user_sequences, item_catalog, id_model, user_summaries,
                          aligned_item_embeddings, **settings, exclude_seen=exclude_seen)


def score_laser(adapter: dict, user_sequences: pd.DataFrame, item_catalog: pd.DataFrame, eval_candidates: pd.DataFrame,
                sasrec_model: dict, sasrec_text_model: dict, user_summaries: pd.DataFrame,
                aligned_item_embeddings: pd.DataFrame, score_cache: ScoreCache, laser: dict, evaluation: dict, backbone: dict, *, model: str,
                family: str = "laser") -> pd.DataFrame:
    """``<model>_scores``: full ranking and sampled candidates, ``evaluation.llm_splits``, the LLM user sample."""
    params = BITUNING_FAMILIES[family].model_validate(laser).model(model)
    ev = EvaluationParams.model_validate(evaluation)
    return score_bituning(
        adapter, _backbone(backbone, params), user_sequences, item_catalog, eval_candidates,
        _id_model(params, sasrec_model, sasrec_text_model), user_summaries, aligned_item_embeddings, users=llm_user_sample(user_sequences, ev.llm_user_sample, ev.seed),
        exclude_seen=ev.exclude_seen, item_batch_size=params.item_batch_size, score_batch_size=params.score_batch_size,
        progress=ev.progress, desc=model, cache=score_cache, splits=ev.llm_splits,
    )


def preference_tune(adapter: dict, user_sequences: pd.DataFrame, item_catalog: pd.DataFrame, sasrec_model: dict,
                    sasrec_text_model: dict, user_summaries: pd.DataFrame, aligned_item_embeddings: pd.DataFrame, laser: dict, evaluation: dict,
                    backbone: dict, *, model: str, family: str = "fusion") -> tuple[dict, pd.DataFrame]:
    """``model`` (``fusion_dmpo``): the family's trained full model (``adapter``) tuned further by DMPO
    or S-DPO on its candidate head (``<family>.preference``); its adapter and training log."""
    family_params = BITUNING_FAMILIES[family].model_validate(laser)
    params = family_params.model(model)
    return preference_tune_bituning(
        adapter, _backbone(backbone, params), model, user_sequences, item_catalog,
        _id_model(params, sasrec_model, sasrec_text_model), user_summaries,
        aligned_item_embeddings, preference=family_params.preference, item_batch_size=params.item_batch_size,
        score_batch_size=params.score_batch_size, exclude_seen=EvaluationParams.model_validate(evaluation).exclude_seen,
    )


def _id_model(params: LaserModelParams, sasrec_model: dict, sasrec_text_model: dict) -> dict:
    """The frozen ID model's artifact that ``id_model`` names (the adapter records its class and weights)."""
    return {"sasrec": sasrec_model, "sasrec_text": sasrec_text_model}[params.id_model]


def _backbone(backbone: dict, params: LaserModelParams) -> Backbone:
    """The frozen LLM at the model's ``layers``, where its trainable parts train (``training.device``)."""
    return check_training_device(load_backbone(**BackboneParams.model_validate(backbone).loader_kwargs(params.layers)),
                                 params.training.device)
