

# The tag of an ablation model's nodes (the laser and fusion ablations, trsr_no_summary): the default
# `kedro run` leaves them out to keep within its run budget; `kedro run --pipelines=full` trains them.
ABLATION = "ablation"

# The stage pipelines, in data-flow order (each a package here; `full` is their sum).
STAGES = ("data_processing", "id_pretraining", "summarization", "alignment", "bituning", "evaluation")
