"""The ``laser`` variant of the bituning stage: Laser Bi-Tuning and its ablations (see ``pipeline.py``)."""

from .pipeline import create_variant_pipeline

__all__ = ["create_variant_pipeline"]
