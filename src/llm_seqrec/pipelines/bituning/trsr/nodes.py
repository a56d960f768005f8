"""trsr nodes: validate the parameter sections, call ``training.lora``, return the artifacts."""

from __future__ import annotations

import pandas as pd

from llm_seqrec.data.fingerprint import data_fingerprint
from llm_seqrec.evaluation.protocol import llm_user_sample
from llm_seqrec.evaluation.score_cache import ScoreCache
from llm_seqrec.llm.backbone import load_backbone
from llm_seqrec.llm.prompts import item_titles
from llm_seqrec.models.llm_recommender import LLMRecommender, PromptSettings, RecommenderConfig
from llm_seqrec.params import BackboneParams, EvaluationParams, TRSRParams
from llm_seqrec.training import seed_everything, training_log
from llm_seqrec.training.lora import (
    adapter_scores,
    cutoff_examples,
    fit_yes_no,
    require_summaries,
    sampled_validator,
    summaries_by_cutoff,
    validation_users,
)


def train_adapter(
    user_sequences: pd.DataFrame,
    item_catalog: pd.DataFrame,
    user_summaries: pd.DataFrame,
    eval_candidates: pd.DataFrame,
    trsr: dict,
    evaluation: dict,
    backbone: dict,
    use_summary: bool,
) -> tuple[dict, pd.DataFrame]:
    """The adapter (``trsr.adapter`` or ``trsr.no_summary_adapter``) and its per-epoch log. Both
    variants train on the users with a train-cutoff summary, so they differ only in the prompt."""
    params = TRSRParams.model_validate(trsr)
    eval_params = EvaluationParams.model_validate(evaluation)
    backbone_params = BackboneParams.model_validate(backbone)
    summaries = summaries_by_cutoff(user_summaries)
    train_summaries = {u: s for (u, cutoff), s in summaries.items() if cutoff == "train"}
    if not train_summaries:
        raise ValueError(
            "user_summaries holds no train-cutoff summaries: set summarization.train_users > 0 and run "
            "`kedro run --pipelines=summarization`"
        )
    if use_summary:
        require_summaries(summaries, eval_candidates, llm_user_sample(user_sequences, eval_params.llm_user_sample, eval_params.seed))
    n_users = len(train_summaries) if params.train_users is None else min(params.train_users, len(train_summaries))
    examples = cutoff_examples(user_sequences, train_summaries, n_users, params.seed, what="trsr training examples")

    seed_everything(params.training.seed)
    llm = load_backbone(**backbone_params.loader_kwargs(params.layers))
    name = "trsr" if use_summary else "trsr_no_summary"
    config = RecommenderConfig(
        head="yes_no",
        backbone=llm.name,
        lora=params.lora,
        prompt=PromptSettings(params.recent_items, use_summary, params.summary_tokens),
        meta={"model": name, "train_users": len(examples), "negatives": params.negatives, "cutoff": "train"},
    )
    titles = item_titles(item_catalog, backbone_params.max_item_chars)
    model = LLMRecommender(llm, config, titles, params.prompt_batch)
    valid = validation_users(user_sequences, eval_candidates, eval_params.llm_user_sample, eval_params.seed,
                             params.training.eval_users, params.training.seed)
    result = fit_yes_no(
        model, examples, titles,
        n_items=int(item_catalog["item_idx"].max()),
        negatives=params.negatives,
        training=params.training,
        name=name,
        validate=sampled_validator(user_sequences, eval_candidates, valid, summaries),
        run_config={"model": config.to_dict(), "data": data_fingerprint(examples, valid)},
    )
    return model.to_artifact(), training_log(name, result.history, backbone_dtype=llm.dtype_name)


def train_trsr(*inputs) -> tuple[dict, pd.DataFrame]:
    """``trsr.adapter``: the summary and the recent items in the prompt (inputs as ``train_adapter``'s)."""
    return train_adapter(*inputs, use_summary=True)


def train_trsr_no_summary(*inputs) -> tuple[dict, pd.DataFrame]:
    """``trsr.no_summary_adapter``: the recent items only, TALLRec-style."""
    return train_adapter(*inputs, use_summary=False)


def score_trsr(
    adapter: dict,
    user_sequences: pd.DataFrame,
    item_catalog: pd.DataFrame,
    user_summaries: pd.DataFrame,
    eval_candidates: pd.DataFrame,
    score_cache: ScoreCache,
    trsr: dict,
    evaluation: dict,
    backbone: dict,
) -> pd.DataFrame:
    """``trsr_scores`` / ``trsr_no_summary_scores``: p(Yes) of every shared candidate of the LLM user
    sample (``trsr.prompt_batch`` prompts per forward); where the prompt shows summaries, every
    evaluated (user, cutoff) must have one."""
    params = TRSRParams.model_validate(trsr)
    eval_params, backbone_params = EvaluationParams.model_validate(evaluation), BackboneParams.model_validate(backbone)
    return adapter_scores(
        adapter, load_backbone(**backbone_params.loader_kwargs(params.layers)), user_sequences, item_catalog, user_summaries,
        eval_candidates, max_item_chars=backbone_params.max_item_chars, sample=eval_params.llm_user_sample,
        sample_seed=eval_params.seed, every_summary=True, progress=eval_params.progress, cache=score_cache,
        prompt_batch=params.prompt_batch, splits=eval_params.llm_splits,
    )[0]
