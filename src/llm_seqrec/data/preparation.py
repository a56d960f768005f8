"""Raw files to the indexed, ordered ``interactions`` and ``item_catalog``: the data_processing stage's
first step as one Kedro-free function, which cross-domain training (``dmpo_transfer``) calls too on
its other data set."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from llm_seqrec.data.negatives import check_enough_negatives
from llm_seqrec.data.readers import read_raw_dataset
from llm_seqrec.data.splitting import build_interaction_tables
from llm_seqrec.data.validation import QualityReport, validate_interactions, validate_items


def prepare_interactions(
    format: str,
    name: str,
    interactions: Path | None,
    items: Path | None,
    *,
    text_fields: list[str] | None,
    k_core: int | None,
    min_user_interactions: int,
    max_text_chars: int,
    max_users: int | None,
    seed: int,
    n_negatives: int,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Read and validate the raw files, filter, index and order them: ``interactions``,
    ``item_catalog`` and the ``data_quality`` report.

    The candidate count (``n_negatives``) is checked here too, so that a run which cannot finish the
    stage stops before it writes any of the stage's outputs.
    """
    raw_interactions, raw_items = read_raw_dataset(format, name, interactions, items)
    report = QualityReport()
    report.counts.update(dataset=name, format=format)
    item_table = validate_items(raw_items, report, text_fields=text_fields, max_text_chars=max_text_chars)
    table = validate_interactions(raw_interactions, report, item_ids=item_table["item_id"], items_path=raw_items.path)
    table, item_catalog = build_interaction_tables(
        table,
        item_table,
        report,
        path=raw_interactions.path,
        min_user_interactions=min_user_interactions,
        k_core=k_core,
        max_users=max_users,
        seed=seed,
    )
    check_enough_negatives(table["user_idx"], table["item_idx"], len(item_catalog), n_negatives)
    return table, item_catalog, report.to_dict()
