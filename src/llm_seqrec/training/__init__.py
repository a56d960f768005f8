"""The training loop shared by every model, and the training procedures of each family (no Kedro)."""

from llm_seqrec.training.config import TrainingConfig
from llm_seqrec.training.log import TRAINING_LOG_COLUMNS, PeakMemory, training_log
from llm_seqrec.training.loop import STOP_REASONS, FitResult, fit, training_dtype
from llm_seqrec.training.state import seed_everything

__all__ = ["STOP_REASONS", "TRAINING_LOG_COLUMNS", "FitResult", "PeakMemory", "TrainingConfig", "fit", "seed_everything",
           "training_dtype", "training_log"]
