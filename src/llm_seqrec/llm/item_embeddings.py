"""The frozen LLM's item vectors (``llm_item_embeddings``): one per item, pooled hidden states of its text.

Each item's title (``text: title``) or catalogue text (title, then the configured fields; ``text: text``)
is cut to ``max_tokens`` tokens and run through the backbone's first ``layer`` decoder layers; the
states after that layer, through the backbone's final norm (exactly what ``backbone.layers: layer``
outputs), are pooled over the item's tokens (``mean``) or taken at its last token (``last``).

Vectors are kept in a content-keyed cache (``ItemEmbeddingCache``, a folder of parquet parts as the
summary and score caches): an item's key hashes the backbone's name and dtype, the depth, the pooling
settings and the item's exact text, so a re-run encodes nothing, and a changed text, depth or pooling
encodes exactly the items it changes. One pass can fill several depths (``depths``), which the design
exploration (``benchmarks/explore_sasrec_text.py``) uses.

Items without text (``data.validation.items_without_text``: an empty title filled with a placeholder and no
text fields) get no vector: their row says ``has_text = False`` and holds zeros, and ``sasrec_text``
represents them by their ID embedding alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from annotated_types import Ge
from pydantic import ConfigDict
from tqdm.auto import tqdm

from llm_seqrec.data.fingerprint import data_fingerprint
from llm_seqrec.data.parts import KeyedParts
from llm_seqrec.data.validation import items_without_text
from llm_seqrec.llm.backbone import Backbone, truncate
from llm_seqrec.llm.device import choose_device, cpu_has_fast_bf16

logger = logging.getLogger(__name__)

CACHE_VERSION = 1  # part of every key: bump it when the encoding changes what a vector holds
SCHEMA = pa.schema([("key", pa.string()), ("embedding", pa.list_(pa.float32()))])
COLUMNS = ["item_idx", "has_text", "key", "embedding"]  # the ``llm_item_embeddings`` table


@dataclass(frozen=True)
class ItemEmbeddingSettings:
    """How an item's text becomes its vector (the ``llm_item_embeddings`` parameter section)."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    text: Literal["title", "text"] = "text"  # the title alone, or the catalogue text (title and fields)
    max_tokens: Annotated[int, Ge(1)] = 64
    layer: Annotated[int, Ge(1)] | None = None  # decoder layers run; None = all of them
    pooling: Literal["mean", "last"] = "mean"
    # The dtype encoding runs in: fast = bfloat16 where the device computes it natively (a CPU with
    # AVX512-BF16/AMX: ~4x float32 there, DESIGN.md), else the backbone's (backbone.dtype); or named.
    dtype: Literal["fast", "backbone", "float32", "bfloat16"] = "fast"
    batch_size: Annotated[int, Ge(1)] = 32
    progress: bool = True

    def key_settings(self) -> dict:
        """What a vector depends on besides the backbone, the depth and the text (batching does not count)."""
        return {k: v for k, v in asdict(self).items() if k in ("max_tokens", "pooling")}


def encoding_dtype(settings: ItemEmbeddingSettings, backbone_dtype: str, device: str = "auto") -> str:
    """The ``backbone.dtype`` to load the backbone in for the encoding (``settings.dtype``)."""
    if settings.dtype == "backbone":
        return backbone_dtype
    if settings.dtype != "fast":
        return settings.dtype
    torch_device = choose_device(device)
    native = torch.cuda.is_bf16_supported() if torch_device.type == "cuda" else torch_device.type == "cpu" and cpu_has_fast_bf16()
    return "bfloat16" if native else backbone_dtype


def depth_name(backbone: Backbone, depth: int) -> str:
    """The name ``backbone`` cut to ``depth`` layers has (``llm.backbone.truncate``): part of every key."""
    return backbone.name if depth == backbone.n_layers else f"{backbone.name}-layers{depth}"


def item_key(backbone_name: str, dtype: str, settings: ItemEmbeddingSettings, text: str) -> str:
    return data_fingerprint(CACHE_VERSION, backbone_name, dtype, settings.key_settings(), text)


class ItemEmbeddingCache(KeyedParts):
    """A handle on the cache folder: the stored vectors by key, and appending new ones (``key``, ``embedding``)."""

    schema = SCHEMA

    def vectors(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors of those of ``keys`` the cache holds."""
        found = self._frame[self._frame["key"].isin(set(keys))]
        return {k: np.asarray(v, dtype=np.float32) for k, v in zip(found["key"], found["embedding"], strict=True)}


def pooled_states(backbone: Backbone, texts: Sequence[str], settings: ItemEmbeddingSettings, depths: Sequence[int],
                  poolings: Sequence[str] | None = None) -> dict[tuple[int, str], np.ndarray]:
    """``{(depth, pooling): [len(texts), hidden] float32}``: each text's pooled state after ``depth`` decoder
    layers (through the final norm) for each of ``poolings`` (default ``settings.pooling``), from one batched
    pass, shortest texts batched together."""
    poolings = list(poolings or [settings.pooling])
    decoder = backbone.model.get_decoder()
    captured: dict[int, torch.Tensor] = {}
    hooks = [decoder.layers[d - 1].register_forward_hook(
        lambda _m, _i, out, d=d: captured.__setitem__(d, out[0] if isinstance(out, tuple) else out)) for d in depths]
    tokenizer = backbone.tokenizer
    ids = tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=settings.max_tokens)["input_ids"]
    ids = [i or [tokenizer.eos_token_id] for i in ids]
    order = np.argsort([len(i) for i in ids], kind="stable")
    out = {(d, p): np.zeros((len(texts), backbone.hidden_size), dtype=np.float32) for d in depths for p in poolings}
    pad = tokenizer.pad_token_id
    try:
        batches = [order[i : i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
        for rows in tqdm(batches, desc="item text embeddings", unit="batch", disable=not settings.progress):
            lengths = torch.tensor([len(ids[r]) for r in rows])
            width = int(lengths.max())
            input_ids = torch.tensor([ids[r] + [pad] * (width - len(ids[r])) for r in rows], device=backbone.device)
            mask = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).to(backbone.device)
            with torch.no_grad():
                decoder(input_ids=input_ids, attention_mask=mask.long(), use_cache=False)
                for d in depths:
                    states = decoder.norm(captured[d]).float()
                    for p in poolings:
                        if p == "mean":
                            pooled = (states * mask.unsqueeze(-1)).sum(1) / lengths.to(states.device).unsqueeze(1)
                        else:
                            pooled = states[torch.arange(len(rows)), (lengths - 1).to(states.device)]
                        out[d, p][rows] = pooled.cpu().numpy()
    finally:
        for hook in hooks:
            hook.remove()
    return out


def embed_catalog(backbone: Backbone, item_catalog: pd.DataFrame, settings: ItemEmbeddingSettings,
                  cache: ItemEmbeddingCache, depths: Sequence[int] | None = None) -> dict[int, pd.DataFrame]:
    """``{depth: llm_item_embeddings table}`` (``COLUMNS``, one row per item, in ``item_idx`` order) for each of
    ``depths`` (default: ``settings.layer``, None = every layer), encoding only the items the cache lacks.

    ``backbone`` runs at full depth; it is cut (in place) to the deepest depth that still needs encoding."""
    if not {"item_idx", "item_id", "title", "text"} <= set(item_catalog.columns):
        raise ValueError("item_catalog needs the columns item_idx, item_id, title and text (data_processing writes them)")
    depths = sorted(set(depths or [settings.layer or backbone.n_layers]))
    if depths[0] < 1 or depths[-1] > backbone.n_layers:
        raise ValueError(f"llm_item_embeddings.layer: the backbone {backbone.name!r} has {backbone.n_layers} decoder "
                         f"layers, give 1..{backbone.n_layers} (got {depths})")
    catalog = item_catalog.sort_values("item_idx").reset_index(drop=True)
    has_text = ~items_without_text(catalog).to_numpy()
    texts = catalog[settings.text].astype(str).tolist()
    keys = {d: [item_key(depth_name(backbone, d), backbone.dtype_name, settings, t) for t in texts] for d in depths}
    stored = {d: cache.vectors([k for k, h in zip(keys[d], has_text, strict=True) if h]) for d in depths}
    todo = sorted({i for d in depths for i, k in enumerate(keys[d]) if has_text[i] and k not in stored[d]})
    missing = [d for d in depths if any(has_text[i] and keys[d][i] not in stored[d] for i in todo)]
    logger.info("llm_item_embeddings: %d items, %d without text (ID embedding only), %d to encode at depths %s of %s",
                len(catalog), int((~has_text).sum()), len(todo), missing, backbone.name)
    zero = np.zeros(backbone.hidden_size, dtype=np.float32)
    if todo:
        encoded = pooled_states(truncate(backbone, missing[-1]), [texts[i] for i in todo], settings, missing)
        for d in missing:
            cache.append(pd.DataFrame({"key": [keys[d][i] for i in todo], "embedding": list(encoded[d, settings.pooling])}))
            stored[d] = cache.vectors([k for k, h in zip(keys[d], has_text, strict=True) if h])
    frames = {}
    for d in depths:
        frames[d] = pd.DataFrame({
            "item_idx": catalog["item_idx"].to_numpy(dtype=np.int64),
            "has_text": has_text,
            "key": keys[d],
            "embedding": [stored[d][k] if h else zero for k, h in zip(keys[d], has_text, strict=True)],
        })
    return frames


def embedding_matrix(llm_item_embeddings: pd.DataFrame, n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(vectors [n_items + 1, h] float32, has_text [n_items + 1] bool)`` with row = item id (row 0, padding,
    and items without text are zeros / False), from an ``llm_item_embeddings`` table."""
    missing = set(range(1, n_items + 1)) - set(llm_item_embeddings["item_idx"])
    if missing:
        raise ValueError(f"llm_item_embeddings lacks items {sorted(missing)[:5]} of the catalogue: re-run id_pretraining")
    frame = llm_item_embeddings.set_index("item_idx").loc[list(range(1, n_items + 1))]
    vectors = torch.from_numpy(np.stack(frame["embedding"].to_numpy()).astype(np.float32))
    has_text = torch.from_numpy(frame["has_text"].to_numpy(dtype=bool).copy())
    return (torch.cat([torch.zeros(1, vectors.shape[1]), vectors]),
            torch.cat([torch.zeros(1, dtype=torch.bool), has_text]))
