"""The ``fusion`` variant of the bituning stage: the parts of the other three methods in one model.

Laser's Bi-Tuning (frozen LLM, M-Former prefix over the frozen SASRec, trainable suffix, contrastive
loss over all items) whose prompt carries LLM-TRSR's summary of the user's history and the recent item
titles, each after its RA-Rec aligned ID embedding as a soft token. None of the four papers has it.
Each part switches off by parameter (``fusion`` in conf/base/parameters_bituning.yml), and the
ablations ``fusion_no_summary``, ``fusion_no_aligned_ids`` and ``fusion_no_prefix`` are trained and
scored beside it, so the evaluation shows what each part adds; ``fusion_dmpo`` is the trained fusion
model further tuned by DMPO on its candidate head (``fusion.preference``), the ladder's top rung.
The nodes are Laser's (``laser/``) under family ``fusion``: one method, two parameter sections.
"""

from __future__ import annotations

from kedro.pipeline import Pipeline

from llm_seqrec.pipelines.bituning.laser.pipeline import create_family_pipeline


def create_variant_pipeline() -> Pipeline:
    return create_family_pipeline("fusion")
