"""The stage pipelines (one package each) and what is shared between them."""

from __future__ import annotations

import importlib

from kedro.pipeline import Pipeline

# The tag of an ablation model's nodes (the laser and fusion ablations, trsr_no_summary): the default
# `kedro run` leaves them out to keep within its run budget; `kedro run --pipelines=full` trains them.
ABLATION = "ablation"
# The tag of the cross-domain models' nodes (dmpo_transfer), left out of the default run likewise.
TRANSFER = "transfer"
LEFT_OUT_OF_DEFAULT_RUN = (ABLATION, TRANSFER)

# The stage pipelines, in data-flow order (each a package here; `full` is their sum).
STAGES = ("data_processing", "id_pretraining", "summarization", "alignment", "bituning", "evaluation")


def stage_pipelines() -> dict[str, Pipeline]:
    """Each stage's pipeline, built from its package: Kedro's registry may hold only the requested ones."""
    return {stage: importlib.import_module(f"llm_seqrec.pipelines.{stage}").create_pipeline() for stage in STAGES}
