"""The training loop shared by every model (no Kedro)."""

from llm_seqrec.training.loop import (
    STOP_REASONS,
    TRAINING_LOG_COLUMNS,
    FitResult,
    PeakMemory,
    fit,
    seed_everything,
    training_dtype,
    training_log,
)

__all__ = ["STOP_REASONS", "TRAINING_LOG_COLUMNS", "FitResult", "PeakMemory", "fit", "seed_everything", "training_dtype",
           "training_log"]
