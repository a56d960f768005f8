"""SASRec that reads item text: each item's representation (input and output side, tied) combines its ID
embedding with a learned projection of the frozen LLM's vector of its text (``llm_item_embeddings``).

The text vectors are a frozen buffer, centred on the mean of the items that have text and scaled to unit
mean norm (``whiten: true`` also decorrelates them: PCA whitening), so the projection starts on the same
scale as the ID table whatever the backbone's depth. How the two views meet (``combine``):

- ``add``: ``e = id + W t`` (the plainest form; UniSRec's text adaptor without the MoE);
- ``gate``: ``e = id + g * W t`` with a learned per-dimension gate ``g`` (sigmoid, starting at 0.5);
- ``concat``: ``e = V [id ; W t]`` (a dual view fused by one linear map, as LLM-ESR's two branches meet).

``id_dropout`` zeroes a training step's ID embedding of an item with that probability, so the text view
has to carry an item on its own, as it must for an item with few training interactions. Items without
text have a zero text vector: their representation is their ID embedding (through ``V`` with ``concat``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Lt
from pydantic import ConfigDict
from torch import nn

from llm_seqrec.data.fingerprint import scorer_fingerprint
from llm_seqrec.data.schema import PAD
from llm_seqrec.models.sasrec import SASRec, SASRecConfig


@dataclass(frozen=True)
class TextFusion:
    """How the text view joins the ID view (the ``sasrec_text.fusion`` settings)."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    combine: Literal["add", "gate", "concat"] = "add"
    whiten: bool = False  # PCA-whiten the centred text vectors (else centre and scale only)
    id_dropout: Annotated[float, Ge(0), Lt(1)] = 0.0  # probability of dropping an item's ID embedding in a step
    text_dropout: Annotated[float, Ge(0), Lt(1)] = 0.0  # dropout on the text vector before the projection


@dataclass(frozen=True, kw_only=True)
class SASRecTextConfig(SASRecConfig):
    text_dim: int  # the LLM's hidden size
    fusion: TextFusion = TextFusion()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SASRecTextConfig":
        return cls(**{**data, "fusion": TextFusion(**data["fusion"])})


def normalise_text_vectors(vectors: torch.Tensor, has_text: torch.Tensor, whiten: bool) -> torch.Tensor:
    """``vectors [n + 1, h]`` centred on the mean of the rows with text, then PCA-whitened (``whiten``) or
    scaled to mean norm 1; rows without text stay zero."""
    rows = vectors[has_text].double()
    if len(rows) == 0:
        return torch.zeros_like(vectors)
    centred = vectors.double() - rows.mean(0)
    if whiten and len(rows) > 1:
        u, s, v = torch.linalg.svd(rows - rows.mean(0), full_matrices=False)
        keep = s > s[0] * 1e-6
        centred = centred @ (v[keep].T / s[keep]) * (len(rows) ** 0.5) / (keep.sum() ** 0.5)
        centred = torch.cat([centred, centred.new_zeros(len(centred), vectors.shape[1] - int(keep.sum()))], 1)
    else:
        centred = centred / centred[has_text].norm(dim=1).mean().clamp_min(1e-12)
    return (centred * has_text.unsqueeze(1)).float()


class SASRecText(SASRec):
    def __init__(self, config: SASRecTextConfig, text_vectors: torch.Tensor | None = None,
                 has_text: torch.Tensor | None = None) -> None:
        super().__init__(config)
        d, fusion = config.hidden_size, config.fusion
        self.text_projection = nn.Linear(config.text_dim, d, bias=False)
        nn.init.xavier_normal_(self.text_projection.weight)
        if fusion.combine == "gate":
            self.gate = nn.Parameter(torch.zeros(d))
        if fusion.combine == "concat":
            self.fuse = nn.Linear(2 * d, d, bias=False)
            with torch.no_grad():  # starts as id + W t
                self.fuse.weight.copy_(torch.cat([torch.eye(d), torch.eye(d)], 1))
        self.text_dropout = nn.Dropout(fusion.text_dropout)
        shape = (config.n_items + 1, config.text_dim)
        if text_vectors is not None and tuple(text_vectors.shape) != shape:
            raise ValueError(f"text vectors of shape {tuple(text_vectors.shape)}, expected {shape} (item id = row)")
        vectors = torch.zeros(shape) if text_vectors is None else normalise_text_vectors(text_vectors, has_text, fusion.whiten)
        self.register_buffer("text_vectors", vectors)

    def item_vectors(self) -> torch.Tensor:
        fusion = self.config.fusion
        ids = self.item_embedding.weight
        if self.training and fusion.id_dropout > 0:
            keep = torch.rand(len(ids), 1, device=ids.device) >= fusion.id_dropout
            ids = ids * keep
        text = self.text_projection(self.text_dropout(self.text_vectors))
        if fusion.combine == "gate":
            text = torch.sigmoid(self.gate) * text
        vectors = self.fuse(torch.cat([ids, text], 1)) if fusion.combine == "concat" else ids + text
        return torch.cat([vectors[:PAD + 1] * 0, vectors[PAD + 1 :]])  # the padding row stays 0

    @property
    def text_coverage(self) -> float:
        """Share of items 1..n with a text vector."""
        return float((self.text_vectors[1:].abs().sum(1) > 0).float().mean())

    def fingerprint(self) -> str:
        return scorer_fingerprint("SASRecText", config=self.config.to_dict(), weights=self.state_dict())

    @classmethod
    def from_artifact(cls, artifact: dict) -> "SASRecText":
        model = cls(SASRecTextConfig.from_dict(artifact["config"]))
        model.load_state_dict(artifact["state_dict"])
        return model


def id_model_from_artifact(artifact: dict) -> SASRec:
    """The frozen ID model an artifact holds, SASRec or SASRecText (by its config)."""
    return (SASRecText if "text_dim" in artifact["config"] else SASRec).from_artifact(artifact)
