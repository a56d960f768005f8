"""Pure torch models, no Kedro: each module one model with a plain ``forward``."""

from llm_seqrec.models.sasrec import SASRec, SASRecConfig, left_pad, length_bucketed_batches

__all__ = ["SASRec", "SASRecConfig", "left_pad", "length_bucketed_batches"]
