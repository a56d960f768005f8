from kedro.pipeline import Node, Pipeline

from llm_seqrec.pipelines import model_datasets

from .nodes import (
    compare_pairs,
    compute_metrics,
    plot_learning_curves,
    plot_metrics,
    render_metrics_table,
    score_llm_zeroshot,
    score_popularity,
    show_example_users,
    tabulate_training_cost,
)

# The models this stage scores itself, untrained; every other model's scores and training log are the
# model stages' outputs (``pipelines.model_datasets``).
UNTRAINED = ("pop", "llm_zeroshot")
TRAINED_MODELS = model_datasets("training_log")
SCORED_MODELS = (*UNTRAINED, *model_datasets("scores"))
TRAINING_LOGS = {model: f"{model}_training_log" for model in TRAINED_MODELS}


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(score_popularity, ["user_sequences", "item_catalog", "eval_candidates", "score_cache", "params:evaluation"],
                 "pop_scores", name="score_popularity"),
            Node(score_llm_zeroshot,
                 ["user_sequences", "item_catalog", "eval_candidates", "score_cache", "params:evaluation", "params:backbone"],
                 "llm_zeroshot_scores", name="score_llm_zeroshot"),
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
                compare_pairs,
                {
                    "user_sequences": "user_sequences",
                    "dataset": "params:dataset",
                    "evaluation": "params:evaluation",
                    **{model: f"{model}_scores" for model in SCORED_MODELS},
                },
                "paired_tests",
                name="compare_pairs",
            ),
            Node(
                tabulate_training_cost,
                {"dataset": "params:dataset", **TRAINING_LOGS},
                "training_cost",
                name="tabulate_training_cost",
            ),
            Node(
                render_metrics_table,
                {"metrics": "metrics", "cost": "training_cost", "paired": "paired_tests", "evaluation": "params:evaluation",
                 "dataset": "params:dataset", **TRAINING_LOGS},
                ["metrics_table", "metrics_html"],
                name="render_metrics_table",
            ),
            Node(plot_metrics, "metrics", "metrics_plot", name="plot_metrics"),
            Node(plot_learning_curves, {"dataset": "params:dataset", **TRAINING_LOGS}, "learning_curves",
                 name="plot_learning_curves"),
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
