from kedro.pipeline import Node, Pipeline

from .nodes import prepare_interactions, sample_evaluation_candidates, split_leave_one_out


def create_pipeline(**kwargs) -> Pipeline:
    """Raw files (paths in ``params:dataset``, read inside the first node) to the stage's five datasets."""
    return Pipeline(
        [
            Node(
                prepare_interactions,
                inputs=["params:dataset", "params:data_processing", "params:evaluation"],
                outputs=["interactions", "item_catalog", "data_quality"],
                name="read_validate_and_index_interactions",
            ),
            Node(
                split_leave_one_out,
                inputs="interactions",
                outputs="user_sequences",
                name="split_leave_one_out_by_time",
            ),
            Node(
                sample_evaluation_candidates,
                inputs=["user_sequences", "item_catalog", "params:evaluation"],
                outputs="eval_candidates",
                name="sample_evaluation_candidates",
            ),
        ]
    )
