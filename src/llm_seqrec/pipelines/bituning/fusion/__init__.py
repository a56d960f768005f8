"""The ``fusion`` variant of the bituning stage: the parts of the other three methods in one model."""

from .pipeline import create_variant_pipeline

__all__ = ["create_variant_pipeline"]
