"""The bituning stage (see DESIGN.md); its nodes arrive with their issue."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
