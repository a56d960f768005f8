"""The score cache as a catalog dataset: loads an ``evaluation.score_cache.ScoreCache`` handle, which
every scoring node passes to ``score_table`` (read, never output)."""

from __future__ import annotations

from llm_seqrec.datasets.parts_cache import PartsCacheDataset
from llm_seqrec.evaluation.score_cache import ScoreCache


class ScoreCacheDataset(PartsCacheDataset):
    """Loads a ``ScoreCache`` handle; saving a frame (``key``, ``fingerprint``, score columns) appends its new keys.

    Example catalog entry::

        score_cache:
          type: llm_seqrec.datasets.ScoreCacheDataset
          filepath: data/07_model_output/score_cache
    """

    handle = ScoreCache
