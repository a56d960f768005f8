"""``full``: every stage with every model, the ablation models included (``__default__`` leaves them out)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
