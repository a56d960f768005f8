"""The item-text embedding cache as a catalog dataset: loads an ``llm.item_embeddings.ItemEmbeddingCache``
handle, which the ``embed_items`` node reads and appends to (an input, never an output)."""

from __future__ import annotations

from llm_seqrec.datasets.parts_cache import PartsCacheDataset
from llm_seqrec.llm.item_embeddings import ItemEmbeddingCache


class ItemEmbeddingCacheDataset(PartsCacheDataset):
    """Loads an ``ItemEmbeddingCache`` handle; saving a frame (``key``, ``embedding``) appends its new keys.

    Example catalog entry::

        llm_item_embedding_cache:
          type: llm_seqrec.datasets.ItemEmbeddingCacheDataset
          filepath: data/04_feature/llm_item_embedding_cache
    """

    handle = ItemEmbeddingCache
