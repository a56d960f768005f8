"""The Bi-Tuning sections, ``laser`` and ``fusion``: one model each plus its ablations, and fusion's
preference-tuned model."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from llm_seqrec.llm.backbone import SectionDepth
from llm_seqrec.models.bituning_prompts import PromptConfig
from llm_seqrec.models.mformer import MFormerSettings
from llm_seqrec.params.base import Strict
from llm_seqrec.training.bituning import BiTuningPreferenceConfig
from llm_seqrec.training.config import TrainingConfig


LASER_ABLATIONS = ("laser_no_moe", "laser_no_prefix", "laser_no_stage1")
FUSION_ABLATIONS = ("fusion_no_summary", "fusion_no_aligned_ids", "fusion_no_prefix")


class LaserModelParams(Strict):
    """One Laser model: the full ``laser`` or an ablation (``laser`` with its ``ablations`` entry applied)."""

    layers: SectionDepth = None  # the backbone's depth (N, all, None = backbone.layers); adapters record it
    prefix: bool = True  # the M-Former prefix over the frozen SASRec; False = no prefix, no ID model
    id_model: Literal["sasrec", "sasrec_text"] = "sasrec"  # the frozen ID model the prefix reads (id_pretraining)
    mformer: MFormerSettings = MFormerSettings()  # models.mformer: the settings and their bounds
    prompts: PromptConfig = PromptConfig()  # models.bituning_prompts: the settings and their bounds
    n_suffix_tokens: int = Field(1, ge=1)
    rec_size: int = Field(128, ge=8)  # the recommendation space users and items are projected to
    temperature: float = Field(0.05, gt=0)
    balance_weight: float = Field(0.01, ge=0)  # Switch load-balancing loss
    use_summary: bool = False  # LLM-TRSR summaries (user_summaries) in the prompt; training users = those summarised
    train_users: int | None = Field(128, ge=1)  # seeded users per epoch; None = every user
    stage1_epochs: int = Field(1, ge=0)  # the first epochs train the item side too (items re-encoded each epoch)
    # Stage 1's loss: None = over every item (the batch's targets encoded fresh, the rest from the catalogue
    # encoded at the epoch's start); N = over the batch's targets and N seeded random items, all fresh
    stage1_negatives: int | None = Field(None, ge=1)
    item_batch_size: int = Field(64, ge=1)  # items per no-grad LLM pass when encoding the catalogue
    score_batch_size: int = Field(16, ge=1)  # users per no-grad LLM pass when validating and scoring
    training: TrainingConfig = TrainingConfig(epochs=3, batch_size=8, lr=1e-3, patience=2, eval_users=64)

    @model_validator(mode="after")
    def _stages(self) -> "LaserModelParams":
        if self.stage1_epochs > self.training.epochs:
            raise ValueError(
                f"laser stage1_epochs={self.stage1_epochs} exceeds training.epochs={self.training.epochs} "
                "(epochs counts both stages)"
            )
        return self


def _deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


class _BiTuningFamilyParams(LaserModelParams):
    """A Bi-Tuning model and its ablations: the full model's settings, and per ablation the keys it
    changes. Each ablation is the same code under changed parameters, trained and scored as a model of
    its own; the names are fixed in code because the pipeline's nodes are made from them."""

    NAME: ClassVar[str]
    ABLATIONS: ClassVar[tuple[str, ...]]
    PREFERENCE_MODEL: ClassVar[str | None] = None  # the full model after preference tuning, if the family has one
    ablations: dict[str, dict] = {}

    @model_validator(mode="after")
    def _ablations_validate(self) -> "_BiTuningFamilyParams":
        unknown = sorted(set(self.ablations) - set(self.ABLATIONS))
        if unknown:
            raise ValueError(f"{self.NAME}.ablations has unknown models {unknown}; known: {list(self.ABLATIONS)}")
        missing = sorted(set(self.ABLATIONS) - set(self.ablations))
        if missing:
            raise ValueError(
                f"{self.NAME}.ablations lacks {missing}: without its entry an ablation would train a copy of {self.NAME}"
            )
        for name in self.ABLATIONS:
            self.model(name)
        return self

    @classmethod
    def models(cls) -> tuple[str, ...]:
        return (cls.NAME, *cls.ABLATIONS)

    def model(self, name: str) -> LaserModelParams:
        """The settings of model ``name``: the full model (also the architecture of its preference-tuned
        model), or an ablation with its overrides applied."""
        base = self.model_dump(exclude={"ablations", "preference"})
        if name in (self.NAME, self.PREFERENCE_MODEL):
            return LaserModelParams.model_validate(base)
        if name not in self.ABLATIONS:
            raise ValueError(f"unknown model {name!r}; known: {', '.join(self.models())}")
        try:
            return LaserModelParams.model_validate(_deep_merge(base, self.ablations[name]))
        except ValueError as exc:
            raise ValueError(f"{self.NAME}.ablations.{name}: {exc}") from None


class LaserParams(_BiTuningFamilyParams):
    """Laser Bi-Tuning (``laser.*``). The defaults hold where no configuration sets a key (tests build
    sections in code); conf/base/parameters_bituning.yml spells them out for editing."""

    NAME: ClassVar[str] = "laser"
    ABLATIONS: ClassVar[tuple[str, ...]] = LASER_ABLATIONS
    ablations: dict[str, dict] = {
        "laser_no_moe": {"mformer": {"n_experts": 1, "top_k": 1}},
        "laser_no_prefix": {"prefix": False},
        "laser_no_stage1": {"stage1_epochs": 0},
    }


class FusionParams(_BiTuningFamilyParams):
    """The fused model (``fusion.*``): Laser's Bi-Tuning with LLM-TRSR's summary in the prompt and
    RA-Rec's aligned ID embedding as a soft token before each item, over the M-Former prefix; each
    ablation switches one part off, so the metrics show what each part adds."""

    NAME: ClassVar[str] = "fusion"
    ABLATIONS: ClassVar[tuple[str, ...]] = FUSION_ABLATIONS
    PREFERENCE_MODEL: ClassVar[str | None] = "fusion_dmpo"
    preference: BiTuningPreferenceConfig = BiTuningPreferenceConfig()  # training.bituning
    use_summary: bool = True
    prompts: PromptConfig = PromptConfig(aligned_id_tokens=True)
    ablations: dict[str, dict] = {
        "fusion_no_summary": {"use_summary": False},
        "fusion_no_aligned_ids": {"prompts": {"aligned_id_tokens": False}},
        "fusion_no_prefix": {"prefix": False},
    }


BITUNING_FAMILIES: dict[str, type[_BiTuningFamilyParams]] = {"laser": LaserParams, "fusion": FusionParams}
