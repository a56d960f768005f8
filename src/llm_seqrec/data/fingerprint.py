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


def scorer_fingerprint(kind: str, **parts: object) -> str:
    """A scorer's identity in the score cache: its kind (the class) and everything its scores depend on
    besides the query, by name. A tensor or a mapping of tensors (a state dict) counts by its bytes
    (``weights_fingerprint``), anything else as JSON; a frozen backbone is named (``Backbone.name`` and
    dtype), never hashed, so the fingerprint stays cheap."""
    named = []
    for name in sorted(parts):
        value = parts[name]
        if isinstance(value, torch.Tensor):
            value = weights_fingerprint({name: value})
        elif isinstance(value, Mapping) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
            value = weights_fingerprint({str(k): v for k, v in value.items()})
        named.append([name, value])
    return data_fingerprint(kind, named)
