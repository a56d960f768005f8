"""Short content hashes that tie an artifact or a checkpoint to exactly what it was made from."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping

import torch

DIGITS = 16  # hex digits kept: collisions among one project's artifacts are not a concern at 64 bits


def weights_fingerprint(tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> str:
    """A hash of tensor names and their exact bytes (any dtype), in name order: equal before and after
    training shows frozen weights did not move; stored in an artifact, it names the weights it read."""
    items = sorted(tensors.items() if isinstance(tensors, Mapping) else tensors, key=lambda item: item[0])
    digest = hashlib.sha256()
    for name, tensor in items:
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:DIGITS]


def data_fingerprint(*parts: object) -> str:
    """A hash of training data: tensors and arrays by their bytes, anything else as JSON, so a
    checkpoint resumes only on the same data."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            digest.update(part.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        elif hasattr(part, "tobytes"):
            digest.update(part.tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:DIGITS]
