"""Typed parameters: every top-level key of ``conf/*/parameters*.yml`` has a model here.

``ProjectParams`` is validated before any node runs (see ``hooks.ParameterValidationHook``), so an
unknown name, a wrong type or an impossible value stops the run before work starts. Nodes receive
plain dicts from Kedro and turn their section into the model with ``Section.model_validate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetParams(Strict):
    """Which raw data set to read (``dataset.*``)."""

    format: Literal["movielens", "csv"] = "movielens"
    name: str = "ml-1m"
    interactions: Path | None = None
    items: Path | None = None
    # Item columns joined (as "field: value") into the item text after the title; None = all columns.
    text_fields: list[str] | None = None

    @model_validator(mode="after")
    def _paths_for_csv(self) -> "DatasetParams":
        if self.format == "csv":
            missing = [k for k in ("interactions", "items") if getattr(self, k) is None]
            if missing:
                raise ValueError(
                    f"dataset.format=csv needs dataset.{' and dataset.'.join(missing)} (paths to the CSV files)"
                )
        elif self.name not in ("ml-1m", "ml-100k"):
            raise ValueError(f"dataset.name={self.name!r}: the movielens reader knows 'ml-1m' and 'ml-100k'")
        return self


class DataProcessingParams(Strict):
    """Cleaning and splitting (``data_processing.*``)."""

    min_user_interactions: int = Field(3, ge=3)  # leave-one-out needs train + valid + test
    kcore: int = Field(0, ge=0)  # 0 = off; else users and items with fewer interactions are dropped iteratively
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
    zeroshot_recent_items: int = Field(10, ge=1)
    zeroshot_length_normalize: bool = True  # mean log-likelihood per title token instead of the sum

    @field_validator("ks")
    def _positive(cls, ks: list[int]) -> list[int]:
        if not ks or min(ks) < 1:
            raise ValueError("evaluation.ks must be positive cut-offs, e.g. [1, 5, 10, 20, 100]")
        return sorted(set(ks))


class BackboneParams(Strict):
    """The frozen LLM (``backbone.*``). ``path`` None = the shipped SmolLM2-135M-Instruct GGUF."""

    path: Path | None = None
    gguf_file: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    max_item_chars: int = Field(200, ge=8)  # characters of an item's text shown in a prompt

    @model_validator(mode="after")
    def _path_exists(self) -> "BackboneParams":
        if self.path is not None and not self.path.exists():
            raise ValueError(f"backbone.path={str(self.path)!r} does not exist")
        if self.path is not None and self.gguf_file is not None and not (self.path / self.gguf_file).is_file():
            raise ValueError(f"backbone.gguf_file={self.gguf_file!r} is not a file in {str(self.path)!r}")
        return self


class TrainingParams(Strict):
    """The shared training loop's settings, nested in each model's section as ``training``."""

    epochs: int = Field(50, ge=1)
    batch_size: int = Field(128, ge=1)
    grad_accumulation: int = Field(1, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    patience: int = Field(5, ge=1)  # epochs without a better validation NDCG@10 before stopping
    eval_every: int = Field(1, ge=1)
    eval_users: int | None = Field(None, ge=1)  # seeded validation sample for early stopping; None = all
    checkpoint_dir: Path | None = None  # where resumable checkpoints go; None = no checkpoints
    seed: int = 42
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    progress: bool = True


class SASRecParams(Strict):
    """SASRec (``sasrec.*``)."""

    max_len: int = Field(200, ge=1)
    hidden_size: int = Field(64, ge=8)
    num_blocks: int = Field(2, ge=1)
    num_heads: int = Field(1, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    loss: Literal["ce", "sampled_softmax"] = "ce"
    n_sampled_negatives: int = Field(256, ge=1)
    training: TrainingParams = TrainingParams()

    @model_validator(mode="after")
    def _heads_divide(self) -> "SASRecParams":
        if self.hidden_size % self.num_heads:
            raise ValueError(f"sasrec.hidden_size={self.hidden_size} is not divisible by sasrec.num_heads={self.num_heads}")
        return self


class ProjectParams(Strict):
    """All parameters. A section that a later stage adds gets its model here."""

    dataset: DatasetParams = DatasetParams()
    data_processing: DataProcessingParams = DataProcessingParams()
    evaluation: EvaluationParams = EvaluationParams()
    backbone: BackboneParams = BackboneParams()
    sasrec: SASRecParams = SASRecParams()

    @model_validator(mode="after")
    def _cross_checks(self) -> "ProjectParams":
        return self
