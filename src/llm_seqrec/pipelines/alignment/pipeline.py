from kedro.pipeline import Node, Pipeline

from .nodes import export_aligned_item_embeddings, make_alignment_samples, score_ra_rec, train_aligner


def create_pipeline(**kwargs) -> Pipeline:
    parameters = ["params:alignment", "params:backbone", "params:evaluation"]
    return Pipeline([
        Node(make_alignment_samples, ["user_sequences", "item_catalog", "params:alignment"], "alignment_samples",
             name="make_alignment_samples"),
        Node(train_aligner, ["alignment_samples", "user_sequences", "item_catalog", "id_item_embeddings",
                             "sasrec_text_item_embeddings", *parameters],
             ["aligner_model", "ra_rec_training_log"], name="train_aligner"),
        Node(export_aligned_item_embeddings, ["aligner_model", "item_catalog"], "aligned_item_embeddings",
             name="export_aligned_item_embeddings"),
        Node(score_ra_rec, ["aligner_model", "user_sequences", "item_catalog", "eval_candidates", "score_cache", *parameters],
             "ra_rec_scores", name="score_ra_rec"),
    ])
