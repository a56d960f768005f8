"""The ``dmpo`` namespace (in-domain, with the few-shot sweep) and ``dmpo_transfer`` (the same models
trained on another data set, tag ``transfer``)."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from llm_seqrec.pipelines import TRANSFER

from .nodes import (
    collect_models,
    compute_reference_logprobs,
    few_shot_sweep,
    make_training_examples,
    score_dmpo,
    train_dmpo,
    train_sdpo,
    train_sft,
)


def create_variant_pipeline() -> Pipeline:
    """The ``dmpo`` namespace (in-domain, with the few-shot sweep) and ``dmpo_transfer`` (the same
    models trained on ``dmpo_transfer.train_dataset``; left out of the default run, tag ``transfer``)."""
    return _models_pipeline("dmpo") + _models_pipeline("dmpo_transfer").tag(TRANSFER)


def _models_pipeline(section: str) -> Pipeline:
    """SFT, DMPO and S-DPO (and, in-domain, the few-shot sweep) under the parameters ``section``, in the
    namespace of that name."""
    transfer = section != "dmpo"
    tables = ["user_sequences", "item_catalog", "user_summaries", "eval_candidates"]
    examples = ["training_examples", "training_items"]
    params = [f"params:{section}", "params:evaluation", "params:backbone", "params:dataset"]
    nodes = [
        Node(
            make_training_examples,
            ["user_sequences", "item_catalog", "user_summaries", f"params:{section}", "params:dataset",
             "params:data_processing", "params:evaluation"],
            examples,
            name="make_training_examples",
        ),
        Node(train_sft, [*examples, *tables, *params], ["sft_adapter", "sft_training_log"], name="train_sft"),
        Node(
            compute_reference_logprobs,
            ["sft_adapter", *examples, f"params:{section}", "params:backbone"],
            "reference_logprobs",
            name="compute_reference_logprobs",
        ),
        Node(
            score_dmpo,
            ["sft_adapter", *tables, "score_cache", f"params:{section}", "params:evaluation", "params:backbone"],
            "sft_scores",
            name="score_sft",
        ),
    ]
    for loss, train, adapter in (("dmpo", train_dmpo, "adapter"), ("sdpo", train_sdpo, "sdpo_adapter")):
        nodes += [
            Node(
                train,
                ["sft_adapter", "reference_logprobs", *examples, *tables, *params],
                [adapter, f"{loss}_training_log"],
                name=f"train_{loss}",
            ),
            Node(
                score_dmpo,
                [adapter, *tables, "score_cache", f"params:{section}", "params:evaluation", "params:backbone"],
                f"{loss}_scores",
                name=f"score_{loss}",
            ),
        ]
    models = ("sft", "dmpo", "sdpo")
    if transfer:
        nodes += [
            Node(collect_models, [f"{m}_{kind}" for m in models], f"{section}_{kind}", name=f"collect_{kind}")
            for kind in ("scores", "training_log")
        ]
        outputs = {f"{section}_scores", f"{section}_training_log"}
    else:
        nodes.append(Node(
            few_shot_sweep,
            [*examples, *tables, "score_cache", *params],
            ["dmpo_few_shot_scores", "dmpo_few_shot_training_log"],
            name="few_shot_sweep",
        ))
        outputs = {f"{model}_{kind}" for model in (*models, "dmpo_few_shot") for kind in ("scores", "training_log")}
    return Pipeline(
        nodes,
        namespace=section,
        inputs={*tables, "score_cache"},
        outputs=outputs,
        parameters={f"params:{section}", "params:evaluation", "params:backbone", "params:dataset",
                    "params:data_processing"},
    )
