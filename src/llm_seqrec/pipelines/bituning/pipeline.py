"""The bituning stage: one namespace per LLM recommender variant, grouped in kedro-viz.

Each variant module (``laser``, ``trsr``, ``dmpo``, ...) beside this file exposes
``create_variant_pipeline() -> Pipeline`` whose nodes and outputs live in the namespace named after
the variant; its trained weights are ``<variant>.adapter`` (versioned) and its scores
``<variant>_scores`` (read by the evaluation stage).
"""

from __future__ import annotations

import importlib

from kedro.pipeline import Pipeline

VARIANTS = ("laser", "trsr", "dmpo")


def create_pipeline(**kwargs) -> Pipeline:
    parts = []
    for variant in VARIANTS:
        try:
            module = importlib.import_module(f"{__package__}.{variant}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{variant}":
                raise
            continue
        parts.append(module.create_variant_pipeline())
    return sum(parts, Pipeline([]))
