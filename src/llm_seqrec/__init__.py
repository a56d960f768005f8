"""llm_seqrec: LLM-based sequential recommenders measured against classic ones."""

__version__ = "0.1.0"
