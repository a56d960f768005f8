"""Custom Kedro datasets: model weights as safetensors + config, PEFT adapters as ``save_pretrained``
folders, and parquet files, written atomically; the summary and score caches as folders of atomically written
parquet parts."""

from llm_seqrec.datasets.item_embedding_cache import ItemEmbeddingCacheDataset
from llm_seqrec.datasets.metrics import MetricsCSVDataset
from llm_seqrec.datasets.peft_adapter import PeftAdapterDataset
from llm_seqrec.datasets.score_cache import ScoreCacheDataset
from llm_seqrec.datasets.summary_cache import SummaryCacheDataset
from llm_seqrec.datasets.weights import AtomicParquetDataset, TorchWeightsDataset

__all__ = [
    "AtomicParquetDataset",
    "ItemEmbeddingCacheDataset",
    "MetricsCSVDataset",
    "PeftAdapterDataset",
    "ScoreCacheDataset",
    "SummaryCacheDataset",
    "TorchWeightsDataset",
]
