"""The ``trsr`` namespace: train and score LLM-TRSR and its no-summary ablation (tag ``ablation``)."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from llm_seqrec.pipelines import ABLATION

from .nodes import score_trsr, train_trsr, train_trsr_no_summary


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
                [f"{suffix}adapter", *tables, "score_cache", "params:trsr", "params:evaluation", "params:backbone"],
                f"{model}_scores",
                name=f"score_{model}",
                tags=tags,
            ),
        ]
    return Pipeline(
        nodes,
        namespace="trsr",
        inputs={*tables, "score_cache"},
        outputs={f"{model}_{kind}" for model in ("trsr", "trsr_no_summary") for kind in ("scores", "training_log")},
        parameters={"params:trsr", "params:evaluation", "params:backbone"},
    )
