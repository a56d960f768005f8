"""The ``trsr`` variant (LLM-TRSR): a LoRA adapter answers "Will the user choose this item? Yes/No"
after the user's summary and recent items; the score is p(Yes). Trained at the ``train`` cutoff
(input ``train_items[:-1]``, target ``train_items[-1]``, that cutoff's summary) with fresh random
negatives 1:1, early-stopped on sampled NDCG@5 of the validation split, scored on the shared candidates
of the LLM user sample. The same model without the summary (recent items only, TALLRec-style) is
``trsr_no_summary``, trained on the same users, so the report shows what the summary adds.
"""

from __future__ import annotations

import pandas as pd
from kedro.pipeline import Node, Pipeline

from llm_seqrec.data.leakage import check_inputs_precede_targets
from llm_seqrec.evaluation.protocol import sampled_rows
from llm_seqrec.llm.backbone import load_backbone
from llm_seqrec.llm.prompts import item_titles
from llm_seqrec.models.llm_recommender import (
    LLMRecommender,
    LoraSettings,
    PromptSettings,
    RecommenderConfig,
    data_fingerprint,
    fit_yes_no,
    llm_sample_rows,
    sampled_ndcg5,
    score_candidates,
    summaries_by_cutoff,
    train_cutoff_examples,
    training_users,
    validation_rows,
)
from llm_seqrec.params import BackboneParams, EvaluationParams, TRSRParams
from llm_seqrec.pipelines import ABLATION
from llm_seqrec.training import seed_everything, training_log


def require_summaries(summaries: dict, rows: pd.DataFrame) -> None:
    missing = sorted({(int(u), s) for u, s in zip(rows["user_idx"], rows["split"], strict=True)} - set(summaries))
    if missing:
        raise ValueError(
            f"user_summaries has no summary for {len(missing)} evaluated (user, cutoff) pairs, e.g. {missing[:3]}: "
            "run `kedro run --pipelines=summarization` with the same evaluation.llm_user_sample and seed"
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
    rows = llm_sample_rows(eval_candidates, user_sequences, eval_params.llm_user_sample, eval_params.seed)
    if use_summary:
        require_summaries(summaries, rows)
    n_users = len(train_summaries) if params.train_users is None else min(params.train_users, len(train_summaries))
    users = training_users(user_sequences, sorted(train_summaries), n_users, params.seed)  # summarised users come first
    examples = train_cutoff_examples(user_sequences, users, train_summaries)
    check_inputs_precede_targets(
        user_sequences, [e.user_idx for e in examples], "train", [e.history for e in examples],
        targets=[e.target for e in examples], what="trsr training examples",
    )

    seed_everything(params.training.seed)
    llm = load_backbone(**backbone_params.loader_kwargs())
    name = "trsr" if use_summary else "trsr_no_summary"
    prompt = PromptSettings(params.recent_items, use_summary, params.summary_tokens)
    config = RecommenderConfig(
        head="yes_no",
        backbone=llm.name,
        lora=LoraSettings(**{**params.lora.model_dump(), "target_modules": tuple(params.lora.target_modules)}),
        prompt=prompt,
        meta={"model": name, "train_users": len(examples), "negatives": params.negatives, "cutoff": "train"},
    )
    model = LLMRecommender(llm, config)
    titles = item_titles(item_catalog, backbone_params.max_item_chars)
    valid = validation_rows(rows, params.training.eval_users, params.training.seed)
    result = fit_yes_no(
        model, examples, titles,
        n_items=int(item_catalog["item_idx"].max()),
        negatives=params.negatives,
        training=params.training,
        name=name,
        validate=lambda m: sampled_ndcg5(m, titles, user_sequences, valid, summaries),
        run_config={"model": config.to_dict(), "data": data_fingerprint(examples, valid.to_dict("list"))},
    )
    return model.to_artifact(), training_log(name, result.history, backbone_dtype=llm.dtype_name)


def train_trsr(*inputs) -> tuple[dict, pd.DataFrame]:
    """``trsr.adapter``: the summary and the recent items in the prompt (inputs as ``train_adapter``'s)."""
    return train_adapter(*inputs, use_summary=True)


def train_trsr_no_summary(*inputs) -> tuple[dict, pd.DataFrame]:
    """``trsr.no_summary_adapter``: the recent items only, TALLRec-style."""
    return train_adapter(*inputs, use_summary=False)


def score_adapter(
    adapter: dict,
    user_sequences: pd.DataFrame,
    item_catalog: pd.DataFrame,
    user_summaries: pd.DataFrame,
    eval_candidates: pd.DataFrame,
    evaluation: dict,
    backbone: dict,
    *,
    every_summary: bool,
) -> tuple[pd.DataFrame, str]:
    """A LoRA recommender artifact's scores of every shared candidate (sampled protocol, both splits, the
    LLM user sample; prompts as the adapter was trained) and its model name. With ``every_summary`` and
    a prompt that shows summaries, every evaluated (user, cutoff) must have one."""
    eval_params = EvaluationParams.model_validate(evaluation)
    backbone_params = BackboneParams.model_validate(backbone)
    rows = llm_sample_rows(eval_candidates, user_sequences, eval_params.llm_user_sample, eval_params.seed)
    summaries = summaries_by_cutoff(user_summaries)
    model = LLMRecommender.from_artifact(adapter, load_backbone(**backbone_params.loader_kwargs()))
    if every_summary and model.config.prompt.use_summary:
        require_summaries(summaries, rows)
    name = model.config.meta["model"]
    scores = score_candidates(
        model, item_titles(item_catalog, backbone_params.max_item_chars), user_sequences, rows, summaries,
        progress=eval_params.progress, desc=name,
    )
    return sampled_rows(scores, rows).assign(backbone_dtype=model.backbone_dtype), name


def score_trsr(*inputs) -> pd.DataFrame:
    """``trsr_scores`` / ``trsr_no_summary_scores``: p(Yes) of every shared candidate."""
    return score_adapter(*inputs, every_summary=True)[0]


def create_variant_pipeline() -> Pipeline:
    tables = ["user_sequences", "item_catalog", "user_summaries", "eval_candidates"]
    nodes = []
    for suffix, train in (("", train_trsr), ("no_summary_", train_trsr_no_summary)):
        model = f"trsr_{suffix}".rstrip("_")
        tags = {ABLATION} if suffix else set()  # trsr_no_summary: LLM-TRSR without its summary
        nodes += [
            Node(
                train,
                [*tables, "params:trsr", "params:evaluation", "params:backbone"],
                [f"{suffix}adapter", f"{model}_training_log"],
                name=f"train_{model}",
                tags=tags,
            ),
            Node(
                score_trsr,
                [f"{suffix}adapter", *tables, "params:evaluation", "params:backbone"],
                f"{model}_scores",
                name=f"score_{model}",
                tags=tags,
            ),
        ]
    return Pipeline(
        nodes,
        namespace="trsr",
        inputs=set(tables),
        outputs={f"{model}_{kind}" for model in ("trsr", "trsr_no_summary") for kind in ("scores", "training_log")},
        parameters={"params:trsr", "params:evaluation", "params:backbone"},
    )
