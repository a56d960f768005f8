"""The alignment stage: RA-Rec's tailored samples, aligner, aligned item embeddings and ``ra_rec`` scores."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
