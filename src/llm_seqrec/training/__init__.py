"""The training loop shared by every model (no Kedro)."""

from llm_seqrec.training.loop import TRAINING_LOG_COLUMNS, FitResult, PeakMemory, fit, seed_everything, training_log

__all__ = ["TRAINING_LOG_COLUMNS", "FitResult", "PeakMemory", "fit", "seed_everything", "training_log"]
