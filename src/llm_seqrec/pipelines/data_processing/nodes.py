"""data_processing nodes: validate the parameter sections, call ``llm_seqrec.data``, return tables."""

from __future__ import annotations

import pandas as pd

from llm_seqrec.data import preparation as data_preparation
from llm_seqrec.data.negatives import sample_eval_candidates
from llm_seqrec.data.splitting import leave_one_out
from llm_seqrec.params import DataProcessingParams, DatasetParams, EvaluationParams


def prepare_interactions(
    dataset: dict, data_processing: dict, evaluation: dict
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """``interactions``, ``item_catalog`` and the ``data_quality`` report (``data.preparation``)."""
    source = DatasetParams.model_validate(dataset)
    params = DataProcessingParams.model_validate(data_processing)
    return data_preparation.prepare_interactions(
        source.format, source.name, source.interactions, source.items,
        text_fields=source.text_fields, k_core=source.k_core, min_user_interactions=params.min_user_interactions,
        max_text_chars=params.max_text_chars, max_users=params.max_users, seed=params.seed,
        n_negatives=EvaluationParams.model_validate(evaluation).n_negatives,
    )


def split_leave_one_out(interactions: pd.DataFrame) -> pd.DataFrame:
    """``user_sequences``: training items, validation target and test target of every user."""
    return leave_one_out(interactions)


def sample_evaluation_candidates(
    user_sequences: pd.DataFrame, item_catalog: pd.DataFrame, evaluation: dict
) -> pd.DataFrame:
    """``eval_candidates``: the target and seeded never-interacted negatives, per user and split."""
    params = EvaluationParams.model_validate(evaluation)
    return sample_eval_candidates(user_sequences, len(item_catalog), params.n_negatives, params.seed)
