from kedro.pipeline import Node, Pipeline

from llm_seqrec.pipelines.summarization.nodes import check_no_leakage, make_history_blocks, summarize_histories


def create_pipeline(**kwargs) -> Pipeline:
    # summary_cache is read, never output: the summarising node appends to it chunk by chunk through
    # the handle it loads (so an interrupted run keeps what it finished), and the check reloads it.
    return Pipeline(
        [
            Node(
                make_history_blocks,
                ["user_sequences", "params:summarization", "params:evaluation"],
                "history_blocks",
                name="make_history_blocks",
            ),
            Node(
                summarize_histories,
                ["history_blocks", "item_catalog", "summary_cache", "params:summarization", "params:backbone"],
                "unchecked_user_summaries",
                name="summarize_histories",
            ),
            Node(
                check_no_leakage,
                ["unchecked_user_summaries", "summary_cache", "user_sequences"],
                "user_summaries",
                name="check_no_leakage",
            ),
        ]
    )
