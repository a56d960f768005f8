"""Thin nodes: validate the parameter section, call the library, return the artifact."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from llm_seqrec.evaluation.protocol import cold_item_metrics, evaluation_user_sets, llm_user_sample, metrics_table
from llm_seqrec.evaluation.example_users import example_users_markdown
from llm_seqrec.evaluation.figures import figure_png, learning_curves_figure, metrics_figure
from llm_seqrec.evaluation.paired import paired_tests
from llm_seqrec.evaluation.report import metrics_html, metrics_markdown, one_split_models, training_cost
from llm_seqrec.evaluation.score_cache import ScoreCache
from llm_seqrec.evaluation.scoring import ROW_CHUNK, score_table
from llm_seqrec.llm.backbone import load_backbone
from llm_seqrec.llm.prompts import item_titles
from llm_seqrec.models.popularity import Popularity
from llm_seqrec.models.zeroshot import ZeroShotLLM
from llm_seqrec.params import BackboneParams, DatasetParams, EvaluationParams

logger = logging.getLogger(__name__)


def score_popularity(
    user_sequences: pd.DataFrame, item_catalog: pd.DataFrame, eval_candidates: pd.DataFrame, score_cache: ScoreCache,
    evaluation: dict,
) -> pd.DataFrame:
    """``pop_scores``: both protocols, both splits, every user."""
    params = EvaluationParams.model_validate(evaluation)
    model = Popularity(user_sequences, int(item_catalog["item_idx"].max()))
    return score_table(model, user_sequences, eval_candidates, exclude_seen=params.exclude_seen, desc="popularity",
                       cache=score_cache)


def score_llm_zeroshot(
    user_sequences: pd.DataFrame,
    item_catalog: pd.DataFrame,
    eval_candidates: pd.DataFrame,
    score_cache: ScoreCache,
    evaluation: dict,
    backbone: dict,
) -> pd.DataFrame:
    """``llm_zeroshot_scores``: the frozen LLM, sampled protocol, ``evaluation.llm_splits``, the LLM user sample."""
    params = EvaluationParams.model_validate(evaluation)
    backbone_params = BackboneParams.model_validate(backbone)
    model = ZeroShotLLM(
        load_backbone(**backbone_params.loader_kwargs(params.zeroshot_layers)),
        item_titles(item_catalog, backbone_params.max_item_chars),
        recent_items=params.zeroshot_recent_items,
        length_normalize=params.zeroshot_length_normalize,
    )
    users = llm_user_sample(user_sequences, params.llm_user_sample, params.seed)
    return score_table(model, user_sequences, eval_candidates, users=users, splits=params.llm_splits, batch_size=ROW_CHUNK,
                       progress=params.progress, desc="llm_zeroshot", cache=score_cache)


def compute_metrics(
    user_sequences: pd.DataFrame, dataset: dict, evaluation: dict, **score_tables: pd.DataFrame
) -> pd.DataFrame:
    """``metrics``: every model on all users and on the LLM user sample, where it scored them, and the
    cold-item slice (``users`` = ``cold_items``: test, full ranking; ``evaluation.protocol.cold_item_users``).

    A model whose scores are not there yet (its stage has not run) is left out and named in the log.
    """
    params = EvaluationParams.model_validate(evaluation)
    user_sets = evaluation_user_sets(user_sequences, params.llm_user_sample, params.seed)
    unscored = sorted(model for model, table in score_tables.items() if table.empty)
    if unscored:
        logger.warning("Not scored yet, so not in metrics.csv (run their stage first): %s", ", ".join(unscored))
    scored, name = _scored_models(score_tables), DatasetParams.model_validate(dataset).name
    rows = [metrics_table(scored, name, params.ks, user_sets), cold_item_metrics(scored, name, params.ks, user_sequences)]
    metrics = pd.concat([r for r in rows if not r.empty], ignore_index=True)
    for split, models in one_split_models(metrics).items():
        logger.info("Scored on the %s split only (evaluation.llm_splits=%s), so no metrics on the other: %s", split,
                    params.llm_splits, ", ".join(models))
    return metrics


def compare_pairs(
    user_sequences: pd.DataFrame, dataset: dict, evaluation: dict, **score_tables: pd.DataFrame
) -> pd.DataFrame:
    """``paired_tests``: each pair the README compares, on the same users, with its paired bootstrap."""
    params = EvaluationParams.model_validate(evaluation)
    user_sets = evaluation_user_sets(user_sequences, params.llm_user_sample, params.seed)
    return paired_tests(_scored_models(score_tables), DatasetParams.model_validate(dataset).name, params.ks, user_sets,
                        n_bootstrap=params.paired_bootstrap, seed=params.seed)


def _scored_models(score_tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Model name -> its scores, for the models scored so far. A table with a ``model`` column holds
    several models (a few-shot sweep, a cross-domain run)."""
    scored = {}
    for name, table in score_tables.items():
        if table.empty:
            continue
        if "model" in table.columns:
            scored.update({model: rows.drop(columns="model") for model, rows in table.groupby("model", sort=True)})
        else:
            scored[name] = table
    return scored


def show_example_users(
    user_sequences: pd.DataFrame,
    item_catalog: pd.DataFrame,
    eval_candidates: pd.DataFrame,
    evaluation: dict,
    **score_tables: pd.DataFrame,
) -> str:
    """``example_users``: a few seeded users of the LLM sample, each model's top items for them."""
    params = EvaluationParams.model_validate(evaluation)
    users = np.sort(llm_user_sample(user_sequences, params.llm_user_sample, params.seed))[: params.example_users]
    return example_users_markdown(user_sequences, item_catalog, eval_candidates, _scored_models(score_tables), users)


def tabulate_training_cost(dataset: dict, **training_logs: pd.DataFrame) -> pd.DataFrame:
    """``training_cost``: this data set's trained models' parameters, minutes and peak memory."""
    return training_cost(DatasetParams.model_validate(dataset).name, training_logs)


def render_metrics_table(metrics: pd.DataFrame, cost: pd.DataFrame, paired: pd.DataFrame, evaluation: dict,
                         dataset: dict, **training_logs: pd.DataFrame) -> tuple[str, str]:
    """``metrics_table`` (markdown) and ``metrics_html``: the same tables, for reading and for a browser
    (this data set's learning curves embedded in the page)."""
    params = EvaluationParams.model_validate(evaluation)
    name = DatasetParams.model_validate(dataset).name
    settings = {"exclude_seen": params.exclude_seen, "n_negatives": params.n_negatives, "paired": paired}
    curves = {name: figure_png(learning_curves_figure(name, training_logs))}
    return metrics_markdown(metrics, cost, **settings), metrics_html(metrics, cost, **settings, curves=curves)


def plot_metrics(metrics: pd.DataFrame) -> Figure:
    return metrics_figure(metrics)


def plot_learning_curves(dataset: dict, **training_logs: pd.DataFrame) -> Figure:
    """``learning_curves``: every trained model's validation metric against the examples it has seen."""
    return learning_curves_figure(DatasetParams.model_validate(dataset).name, training_logs)
