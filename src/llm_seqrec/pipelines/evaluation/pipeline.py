from kedro.pipeline import Node, Pipeline

from .nodes import (
    compute_metrics,
    plot_metrics,
    render_metrics_table,
    score_llm_zeroshot,
    score_popularity,
    show_example_users,
    tabulate_training_cost,
)

# Every model whose ``<model>_scores`` the metrics cover; a stage that adds a model adds its name here.
SCORED_MODELS = (
    "pop",
    "sasrec",
    "llm_zeroshot",
    "ra_rec",
    "laser",
    "laser_no_moe",
    "laser_no_prefix",
    "laser_no_stage1",
    "fusion",
    "fusion_dmpo",
    "fusion_no_summary",
    "fusion_no_aligned_ids",
    "fusion_no_prefix",
    "trsr",
    "trsr_no_summary",
    "sft",
    "dmpo",
    "sdpo",
    "dmpo_few_shot",  # one table, a `model` column per few-shot budget (dmpo_u64, ...)
    "dmpo_transfer",  # one table: sft, dmpo and sdpo trained on another data set (dmpo_from_ml-1m, ...)
)
UNTRAINED = ("pop", "llm_zeroshot")
# Every trained model writes ``<model>_training_log``: the training-cost table reads them all.
TRAINED_MODELS = tuple(model for model in SCORED_MODELS if model not in UNTRAINED)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                score_popularity,
                ["user_sequences", "item_catalog", "eval_candidates", "params:evaluation"],
                "pop_scores",
                name="score_popularity",
            ),
            Node(
                score_llm_zeroshot,
                ["user_sequences", "item_catalog", "eval_candidates", "params:evaluation", "params:backbone"],
                "llm_zeroshot_scores",
                name="score_llm_zeroshot",
            ),
            Node(
                compute_metrics,
                {
                    "user_sequences": "user_sequences",
                    "dataset": "params:dataset",
                    "evaluation": "params:evaluation",
                    **{model: f"{model}_scores" for model in SCORED_MODELS},
                },
                "metrics",
                name="compute_metrics",
            ),
            Node(
                tabulate_training_cost,
                {"dataset": "params:dataset", **{model: f"{model}_training_log" for model in TRAINED_MODELS}},
                "training_cost",
                name="tabulate_training_cost",
            ),
            Node(
                render_metrics_table,
                ["metrics", "training_cost", "params:evaluation"],
                ["metrics_table", "metrics_html"],
                name="render_metrics_table",
            ),
            Node(plot_metrics, "metrics", "metrics_plot", name="plot_metrics"),
            Node(
                show_example_users,
                {
                    "user_sequences": "user_sequences",
                    "item_catalog": "item_catalog",
                    "eval_candidates": "eval_candidates",
                    "evaluation": "params:evaluation",
                    **{model: f"{model}_scores" for model in SCORED_MODELS},
                },
                "example_users",
                name="show_example_users",
            ),
        ]
    )
