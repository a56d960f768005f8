"""data_processing nodes: validate the parameter sections, call ``llm_seqrec.data``, return tables."""

from __future__ import annotations

import pandas as pd

from llm_seqrec.data.negatives import check_enough_negatives, sample_eval_candidates
from llm_seqrec.data.readers import read_raw_dataset
from llm_seqrec.data.splitting import build_interaction_tables, leave_one_out
from llm_seqrec.data.validation import QualityReport, validate_interactions, validate_items
from llm_seqrec.params import DataProcessingParams, DatasetParams, EvaluationParams


def prepare_interactions(
    dataset: dict, data_processing: dict, evaluation: dict
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Read and validate the raw files, filter, index and order them: ``interactions``,
    ``item_catalog`` and the ``data_quality`` report.

    The candidate count is checked here too, so that a run which cannot finish the stage stops
    before it writes any of the stage's outputs.
    """
    source = DatasetParams.model_validate(dataset)
    params = DataProcessingParams.model_validate(data_processing)
    n_negatives = EvaluationParams.model_validate(evaluation).n_negatives
    raw_interactions, raw_items = read_raw_dataset(source.format, source.name, source.interactions, source.items)
    report = QualityReport()
    report.counts.update(dataset=source.name, format=source.format)
    items = validate_items(raw_items, report, text_fields=source.text_fields, max_text_chars=params.max_text_chars)
    interactions = validate_interactions(
        raw_interactions, report, item_ids=items["item_id"], items_path=raw_items.path
    )
    interactions, item_catalog = build_interaction_tables(
        interactions,
        items,
        report,
        path=raw_interactions.path,
        min_user_interactions=params.min_user_interactions,
        k_core=source.k_core,
        max_users=params.max_users,
        seed=params.seed,
    )
    check_enough_negatives(interactions["user_idx"], interactions["item_idx"], len(item_catalog), n_negatives)
    return interactions, item_catalog, report.to_dict()


def split_leave_one_out(interactions: pd.DataFrame) -> pd.DataFrame:
    """``user_sequences``: training items, validation target and test target of every user."""
    return leave_one_out(interactions)


def sample_evaluation_candidates(
    user_sequences: pd.DataFrame, item_catalog: pd.DataFrame, evaluation: dict
) -> pd.DataFrame:
    """``eval_candidates``: the target and seeded never-interacted negatives, per user and split."""
    params = EvaluationParams.model_validate(evaluation)
    return sample_eval_candidates(user_sequences, len(item_catalog), params.n_negatives, params.seed)
