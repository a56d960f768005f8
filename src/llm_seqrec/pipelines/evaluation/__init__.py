"""The evaluation stage: popularity and frozen-LLM baselines, then metrics over every model's scores."""

from .pipeline import SCORED_MODELS, create_pipeline

__all__ = ["SCORED_MODELS", "create_pipeline"]
