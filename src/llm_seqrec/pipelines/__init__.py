

# The tag of an ablation model's nodes (the laser and fusion ablations, trsr_no_summary): the default
# `kedro run` leaves them out to keep within its run budget; `kedro run --pipelines=full` trains them.
ABLATION = "ablation"
