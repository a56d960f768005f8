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


# The stages that train or score models; the evaluation stage reads what they write.
MODEL_STAGES = ("id_pretraining", "alignment", "bituning")


def stage_pipelines() -> dict[str, Pipeline]:
    """Each stage's pipeline, built from its package: Kedro's registry may hold only the requested ones."""
    return {stage: importlib.import_module(f"llm_seqrec.pipelines.{stage}").create_pipeline() for stage in STAGES}


def model_datasets(kind: str, stages: tuple[str, ...] = MODEL_STAGES) -> tuple[str, ...]:
    """The models whose ``<model>_<kind>`` dataset (``scores``, ``training_log``) ``stages`` output, stage by
    stage and by name within one: derived from the pipelines, so a new method is evaluated once it is built."""
    suffix = f"_{kind}"
    found: list[str] = []
    for stage in stages:
        outputs = importlib.import_module(f"llm_seqrec.pipelines.{stage}").create_pipeline().outputs()
        found += sorted(name.removesuffix(suffix) for name in outputs if name.endswith(suffix))
    return tuple(found)
