"""The summarization stage (LLM-TRSR): blocks of each history, their LLM summaries (cached), a leakage check."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
