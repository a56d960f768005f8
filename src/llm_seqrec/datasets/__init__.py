"""Custom Kedro datasets: model weights as safetensors + config, written atomically."""

from llm_seqrec.datasets.weights import AtomicParquetDataset, TorchWeightsDataset

__all__ = ["AtomicParquetDataset", "TorchWeightsDataset"]
