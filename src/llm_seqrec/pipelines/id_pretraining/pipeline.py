from kedro.pipeline import Node, Pipeline

from .nodes import compute_user_states, extract_item_embeddings, score_sasrec, train_sasrec


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(
            train_sasrec,
            ["user_sequences", "item_catalog", "params:sasrec", "params:evaluation"],
            ["sasrec_model", "sasrec_training_log"],
            name="train_sasrec",
        ),
        Node(extract_item_embeddings, "sasrec_model", "id_item_embeddings", name="extract_item_embeddings"),
        Node(compute_user_states, ["sasrec_model", "user_sequences", "params:sasrec"], "id_user_states", name="compute_user_states"),
        Node(
            score_sasrec,
            ["sasrec_model", "user_sequences", "eval_candidates", "score_cache", "params:sasrec", "params:evaluation"],
            "sasrec_scores",
            name="score_sasrec",
        ),
    ])
