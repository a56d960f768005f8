from kedro.pipeline import Node, Pipeline

from .nodes import (
    compute_user_states,
    embed_items,
    extract_item_embeddings,
    extract_sasrec_text_item_embeddings,
    score_sasrec,
    score_sasrec_text,
    train_sasrec,
    train_sasrec_text,
)


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
        Node(embed_items, ["item_catalog", "llm_item_embedding_cache", "params:backbone", "params:llm_item_embeddings"],
             "llm_item_embeddings", name="embed_items"),
        Node(
            train_sasrec_text,
            ["user_sequences", "item_catalog", "llm_item_embeddings", "params:sasrec_text", "params:evaluation"],
            ["sasrec_text_model", "sasrec_text_training_log"],
            name="train_sasrec_text",
        ),
        Node(extract_sasrec_text_item_embeddings, "sasrec_text_model", "sasrec_text_item_embeddings",
             name="extract_sasrec_text_item_embeddings"),
        Node(
            score_sasrec_text,
            ["sasrec_text_model", "user_sequences", "eval_candidates", "score_cache", "params:sasrec_text",
             "params:evaluation"],
            "sasrec_text_scores",
            name="score_sasrec_text",
        ),
    ])
