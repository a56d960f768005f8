"""The bituning stage: one namespace per LLM recommender variant, grouped in kedro-viz.

Each variant module beside this file exposes ``create_variant_pipeline() -> Pipeline`` whose nodes
live in the namespace named after the variant; trained weights are versioned ``<model>_adapter``
datasets and scores ``<model>_scores`` (read by the evaluation stage).
"""

from __future__ import annotations

from kedro.pipeline import Pipeline

from . import dmpo, fusion, laser, trsr


def create_pipeline(**kwargs) -> Pipeline:
    return sum((variant.create_variant_pipeline() for variant in (laser, trsr, dmpo, fusion)), Pipeline([]))
