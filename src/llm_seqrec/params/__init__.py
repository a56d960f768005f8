"""Typed parameters: every top-level key of ``conf/*/parameters*.yml`` has a model in this package.

``ProjectParams`` is validated before any node runs (see ``hooks.ParameterValidationHook``), so an
unknown name, a wrong type or an impossible value stops the run before work starts. Nodes receive
plain dicts from Kedro and turn their section into the model with ``Section.model_validate``.
"""

from __future__ import annotations

from typing import get_type_hints

from pydantic import model_validator

from llm_seqrec.params.base import Strict, validate_section
from llm_seqrec.params.bituning import BITUNING_FAMILIES, FUSION_ABLATIONS, LASER_ABLATIONS, FusionParams, LaserModelParams, LaserParams
from llm_seqrec.params.data import (
    MOVIELENS_ITEMS,
    BackboneParams,
    DataProcessingParams,
    DatasetParams,
    EvaluationParams,
    ItemEmbeddingParams,
    SASRecParams,
    SASRecTextParams,
    catalogue_size_bound,
)
from llm_seqrec.params.llm_models import (
    AlignmentParams,
    DMPOParams,
    DMPOTransferParams,
    SummarizationParams,
    SummaryTemplatesParams,
    TRSRParams,
)
from llm_seqrec.llm.model_files import decoder_layers
from llm_seqrec.training.config import TrainingConfig

PROCESSES = get_type_hints(TrainingConfig, include_extras=True)["processes"]  # its bound, once


class TrackingParams(Strict):
    # Log every kedro run to MLflow through kedro-mlflow (conf/base/mlflow.yml: a local file store
    # under mlruns/), with one nested run per trained model.
    mlflow: bool = True


class ProcessesParams(Strict):
    """The top-level ``training`` section: the processes every model's ``training.processes`` reads
    (``--params=training.processes=2``), with ``TrainingConfig``'s bound."""

    processes: PROCESSES = 1


class ProjectParams(Strict):
    """All parameters. A section that a later stage adds gets its model here."""

    dataset: DatasetParams = DatasetParams()
    data_processing: DataProcessingParams = DataProcessingParams()
    evaluation: EvaluationParams = EvaluationParams()
    backbone: BackboneParams = BackboneParams()
    sasrec: SASRecParams = SASRecParams()
    llm_item_embeddings: ItemEmbeddingParams = ItemEmbeddingParams()
    sasrec_text: SASRecTextParams = SASRecTextParams()
    summarization: SummarizationParams = SummarizationParams()
    alignment: AlignmentParams = AlignmentParams()
    laser: LaserParams = LaserParams()
    fusion: FusionParams = FusionParams()
    trsr: TRSRParams = TRSRParams()
    dmpo: DMPOParams = DMPOParams()
    dmpo_transfer: DMPOTransferParams = DMPOTransferParams(train_dataset=DatasetParams(name="ml-100k"))
    tracking: TrackingParams = TrackingParams()
    training: ProcessesParams = ProcessesParams()

    @model_validator(mode="after")
    def _cross_checks(self) -> "ProjectParams":
        if self.dmpo.train_dataset is not None:
            raise ValueError("dmpo.train_dataset is for dmpo_transfer: set dmpo_transfer.train_dataset, whose models "
                             "are reported beside the in-domain ones")
        items = catalogue_size_bound(self.dataset)
        if items is not None:
            for name, value in (("evaluation.n_negatives", self.evaluation.n_negatives), ("dmpo.negatives", self.dmpo.negatives)):
                if value >= items:
                    raise ValueError(
                        f"{name}={value} distinct negatives cannot be drawn from data set {self.dataset.name!r}, "
                        f"which has at most {items} items"
                    )
        deeper = {key: n for key, n in self.section_depths().items() if isinstance(n, int)}
        if deeper and max(deeper.values()) > (total := decoder_layers(self.backbone.path, self.backbone.gguf_file)):
            key = max(deeper, key=deeper.get)
            raise ValueError(f"{key}={deeper[key]}: the backbone has {total} decoder layers, give 1..{total}, "
                             "all, or null for backbone.layers")
        return self

    def section_depths(self) -> dict[str, int | str | None]:
        """Every section's own depth (``<section>.layers``, a Bi-Tuning ablation's included; None = backbone.layers)."""
        depths = {f"{name}.layers": getattr(self, name).layers
                  for name in ("summarization", "alignment", "trsr", "dmpo", "dmpo_transfer")}
        depths["evaluation.zeroshot_layers"] = self.evaluation.zeroshot_layers
        for family in BITUNING_FAMILIES:
            section = getattr(self, family)
            depths |= {f"{family}.layers" if model == family else f"{family}.ablations.{model}.layers": section.model(model).layers
                       for model in section.models()}
        return depths


__all__ = [
    "BITUNING_FAMILIES", "FUSION_ABLATIONS", "LASER_ABLATIONS", "MOVIELENS_ITEMS", "AlignmentParams", "BackboneParams",
    "DMPOParams", "DMPOTransferParams", "DataProcessingParams", "DatasetParams", "EvaluationParams", "FusionParams", "ItemEmbeddingParams",
    "LaserModelParams", "LaserParams", "ProcessesParams", "ProjectParams", "SASRecParams", "SASRecTextParams", "Strict", "SummarizationParams",
    "SummaryTemplatesParams", "TRSRParams", "TrackingParams", "catalogue_size_bound", "validate_section",
]
