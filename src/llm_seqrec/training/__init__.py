"""The training loop shared by every model (no Kedro)."""

from llm_seqrec.training.loop import FitResult, fit, seed_everything

__all__ = ["FitResult", "fit", "seed_everything"]
