"""Pure torch models, no Kedro: each module one model, each a recommender (``models.recommender``)."""

from llm_seqrec.models.sasrec import SASRec, SASRecConfig

__all__ = ["SASRec", "SASRecConfig"]
