"""The id_pretraining stage: SASRec over item IDs, its item embeddings, user states and scores."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
