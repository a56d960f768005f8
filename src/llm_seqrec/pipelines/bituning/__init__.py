"""The bituning stage: one namespace per variant (laser, fusion, trsr, dmpo), see DESIGN.md."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
