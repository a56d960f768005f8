"""The data_processing stage: raw files to interactions, item catalog, leave-one-out splits and candidates."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
