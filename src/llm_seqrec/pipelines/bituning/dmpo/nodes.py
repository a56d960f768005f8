"""dmpo nodes: validate the parameter sections, call ``training.lora`` / ``training.preference``,
return the artifacts. The same nodes serve ``dmpo`` and ``dmpo_transfer`` (another training data set)."""

from __future__ import annotations

import dataclasses

import pandas as pd

from llm_seqrec.data.fingerprint import data_fingerprint, weights_fingerprint
from llm_seqrec.data.preparation import prepare_interactions
from llm_seqrec.data.schema import SCORE_COLUMNS
from llm_seqrec.data.splitting import leave_one_out
from llm_seqrec.evaluation.protocol import llm_user_sample, sampled_rows
from llm_seqrec.evaluation.score_cache import ScoreCache
from llm_seqrec.evaluation.scoring import ROW_CHUNK, score_table
from llm_seqrec.llm.backbone import Backbone, load_backbone
from llm_seqrec.llm.prompts import item_titles
from llm_seqrec.models.llm_recommender import LLMRecommender, PromptSettings, RecommenderConfig
from llm_seqrec.params import BackboneParams, DataProcessingParams, DatasetParams, DMPOParams, EvaluationParams
from llm_seqrec.training import seed_everything, training_log
from llm_seqrec.training.lora import adapter_scores, fit_sft, sampled_validator, summaries_by_cutoff, validation_users
from llm_seqrec.training.preference import (
    fit_preference,
    preference_examples,
    read_reference,
    reference_logprobs,
    reference_table,
    table_examples,
)

def make_training_examples(
    user_sequences: pd.DataFrame,
    item_catalog: pd.DataFrame,
    user_summaries: pd.DataFrame,
    dmpo: dict,
    dataset: dict,
    data_processing: dict,
    evaluation: dict,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``dmpo.training_examples`` (one row per training user, in training-set order; ``history`` holds
    the titles' item ids the prompt shows) and ``dmpo.training_items`` (their items' titles)."""
    params = DMPOParams.model_validate(dmpo)
    domain = DatasetParams.model_validate(dataset).name
    summaries: dict[int, str] = {}
    if params.train_dataset is None:
        sequences, catalog = user_sequences, item_catalog
        if params.use_summary:
            summaries = {u: s for (u, cutoff), s in summaries_by_cutoff(user_summaries).items() if cutoff == "train"}
    else:
        if params.train_dataset.name == domain:
            raise ValueError(f"dmpo_transfer.train_dataset names the evaluated data set {domain!r}: "
                             "cross-domain training needs another one")
        source, processing = params.train_dataset, DataProcessingParams.model_validate(data_processing)
        interactions, catalog, _ = prepare_interactions(
            source.format, source.name, source.interactions, source.items,
            text_fields=source.text_fields, k_core=source.k_core, min_user_interactions=processing.min_user_interactions,
            max_text_chars=processing.max_text_chars, max_users=processing.max_users, seed=processing.seed,
            n_negatives=EvaluationParams.model_validate(evaluation).n_negatives,
        )
        sequences, domain = leave_one_out(interactions), source.name
    n_users = max([params.train_users, *params.few_shot_users])
    return preference_examples(sequences, catalog, summaries, n_users, params.seed, params.recent_items,
                               params.negatives, domain)


def _model_name(base: str, training_examples: pd.DataFrame, dataset: dict) -> str:
    """``base``, or ``base_from_<training data set>`` when trained on another data set than evaluated."""
    domain = str(training_examples["domain"].iloc[0])
    return base if domain == DatasetParams.model_validate(dataset).name else f"{base}_from_{domain}"


class _Context:
    """What every training node here needs: parameters, the backbone, titles, the evaluated users."""

    def __init__(self, training_examples, training_items, user_sequences, item_catalog, user_summaries,
                 eval_candidates, dmpo, evaluation, backbone) -> None:
        self.params = DMPOParams.model_validate(dmpo)
        self.evaluation = EvaluationParams.model_validate(evaluation)
        self.backbone = BackboneParams.model_validate(backbone)
        self.training_examples = training_examples
        self.train_titles = item_titles(training_items, self.backbone.max_item_chars)
        self.eval_titles = item_titles(item_catalog, self.backbone.max_item_chars)
        self.user_sequences, self.eval_candidates = user_sequences, eval_candidates
        self.summaries = summaries_by_cutoff(user_summaries)

    def load_backbone(self) -> Backbone:
        return load_backbone(**self.backbone.loader_kwargs(self.params.layers))

    def validate(self, n_users: int | None, seed: int):
        users = validation_users(self.user_sequences, self.eval_candidates, self.evaluation.llm_user_sample,
                                 self.evaluation.seed, n_users, seed)
        return sampled_validator(self.user_sequences, self.eval_candidates, users, self.summaries)

    def sft(self, name: str, n_users: int) -> tuple[LLMRecommender, pd.DataFrame]:
        """A fresh LoRA adapter fine-tuned on the first ``n_users`` examples' positive titles."""
        p = self.params
        examples = table_examples(self.training_examples, n_users)
        seed_everything(p.sft.seed)
        llm = self.load_backbone()
        config = RecommenderConfig(
            head="likelihood",
            backbone=llm.name,
            lora=p.lora,
            # Cross-domain training users have no summaries: keep the evaluation prompts like theirs.
            prompt=PromptSettings(p.recent_items, p.use_summary and p.train_dataset is None, p.summary_tokens),
            length_normalize=p.length_normalize,
            meta={"model": name, "train_users": len(examples), "domain": str(self.training_examples["domain"].iloc[0])},
        )
        model = LLMRecommender(llm, config, self.eval_titles, p.prompt_batch)
        result = fit_sft(
            model, examples, self.train_titles, p.sft, name,
            validate=self.validate(p.sft.eval_users, p.sft.seed),
            run_config={"model": config.to_dict(), "data": data_fingerprint(examples)},
        )
        return model, training_log(name, result.history, backbone_dtype=model.backbone_dtype)

    def preference(self, sft: LLMRecommender, reference, loss: str, name: str, n_users: int) -> tuple[LLMRecommender, pd.DataFrame]:
        """``sft`` trained further with the ``loss`` preference objective against ``reference``."""
        p = self.params
        examples = table_examples(self.training_examples, n_users)
        sft.config = dataclasses.replace(
            sft.config,
            meta={**sft.config.meta, "model": name, "loss": loss, "beta": p.beta, "negatives": p.negatives,
                  "sft_weight": p.sft_weight, "reference": f"sft adapter {weights_fingerprint(sft.adapter_state_dict())}"},
        )
        result = fit_preference(
            sft, examples, self.train_titles, reference, loss, p.beta, p.sft_weight, p.preference, name,
            validate=self.validate(p.preference.eval_users, p.preference.seed),
            run_config={"model": sft.config.to_dict(), "data": data_fingerprint(examples, reference)},
        )
        return sft, training_log(name, result.history, backbone_dtype=sft.backbone_dtype)

    def llm_users(self):
        return llm_user_sample(self.user_sequences, self.evaluation.llm_user_sample, self.evaluation.seed)


def train_sft(training_examples, training_items, user_sequences, item_catalog, user_summaries, eval_candidates,
              dmpo: dict, evaluation: dict, backbone: dict, dataset: dict) -> tuple[dict, pd.DataFrame]:
    """``dmpo.sft_adapter`` and its log: SFT on the first ``dmpo.train_users`` examples."""
    context = _Context(training_examples, training_items, user_sequences, item_catalog, user_summaries,
                       eval_candidates, dmpo, evaluation, backbone)
    model, log = context.sft(_model_name("sft", training_examples, dataset), context.params.train_users)
    return model.to_artifact(), log


def compute_reference_logprobs(sft_adapter: dict, training_examples: pd.DataFrame, training_items: pd.DataFrame,
                               dmpo: dict, backbone: dict) -> pd.DataFrame:
    """``dmpo.reference_logprobs``: πref(positive), πref(negatives) per training example under the SFT
    adapter, computed once; ``sft_adapter`` names the adapter state they came from."""
    params = DMPOParams.model_validate(dmpo)
    backbone_params = BackboneParams.model_validate(backbone)
    model = LLMRecommender.from_artifact(sft_adapter, load_backbone(**backbone_params.loader_kwargs(params.layers)),
                                         prompt_batch=params.prompt_batch)
    examples = table_examples(training_examples, params.train_users)
    reference = reference_logprobs(model, examples, item_titles(training_items, backbone_params.max_item_chars))
    return reference_table(examples, reference, weights_fingerprint(sft_adapter["state_dict"]))


def train_preference(sft_adapter: dict, reference_logprobs: pd.DataFrame, training_examples, training_items,
                     user_sequences, item_catalog, user_summaries, eval_candidates, dmpo: dict, evaluation: dict,
                     backbone: dict, dataset: dict, loss: str) -> tuple[dict, pd.DataFrame]:
    """``dmpo.adapter`` (``loss="dmpo"``) or ``dmpo.sdpo_adapter`` (``"sdpo"``), from the SFT adapter."""
    context = _Context(training_examples, training_items, user_sequences, item_catalog, user_summaries,
                       eval_candidates, dmpo, evaluation, backbone)
    sft = LLMRecommender.from_artifact(sft_adapter, context.load_backbone(), context.eval_titles, context.params.prompt_batch)
    examples = table_examples(training_examples, context.params.train_users)
    reference = read_reference(reference_logprobs, examples, weights_fingerprint(sft_adapter["state_dict"]))
    model, log = context.preference(sft, reference, loss, _model_name(loss, training_examples, dataset), len(examples))
    return model.to_artifact(), log


def train_dmpo(*inputs) -> tuple[dict, pd.DataFrame]:
    """``dmpo.adapter``: DMPO's loss (inputs as ``train_preference``'s)."""
    return train_preference(*inputs, loss="dmpo")


def train_sdpo(*inputs) -> tuple[dict, pd.DataFrame]:
    """``dmpo.sdpo_adapter``: S-DPO's loss."""
    return train_preference(*inputs, loss="sdpo")


def score_dmpo(adapter: dict, user_sequences: pd.DataFrame, item_catalog: pd.DataFrame, user_summaries: pd.DataFrame,
               eval_candidates: pd.DataFrame, score_cache: ScoreCache, dmpo: dict, evaluation: dict,
               backbone: dict) -> pd.DataFrame:
    """``sft_scores`` / ``dmpo_scores`` / ``sdpo_scores``: each shared candidate's title log-likelihood
    (per token where the adapter says so; ``dmpo.prompt_batch`` prompts per forward), with the ``model``
    column; a user without a summary at a cutoff is shown none."""
    params = DMPOParams.model_validate(dmpo)
    eval_params, backbone_params = EvaluationParams.model_validate(evaluation), BackboneParams.model_validate(backbone)
    table, name = adapter_scores(
        adapter, load_backbone(**backbone_params.loader_kwargs(params.layers)), user_sequences, item_catalog, user_summaries,
        eval_candidates, max_item_chars=backbone_params.max_item_chars, sample=eval_params.llm_user_sample,
        sample_seed=eval_params.seed, every_summary=False, progress=eval_params.progress, cache=score_cache,
        prompt_batch=params.prompt_batch, splits=eval_params.llm_splits,
    )
    return table.assign(model=name)


def few_shot_sweep(training_examples, training_items, user_sequences, item_catalog, user_summaries, eval_candidates,
                   score_cache: ScoreCache, dmpo: dict, evaluation: dict, backbone: dict,
                   dataset: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``dmpo_few_shot_scores`` and its training log: for each n in ``dmpo.few_shot_users``, SFT then
    DMPO on the first n training examples, scored as ``dmpo_u<n>`` (adapters are not kept)."""
    context = _Context(training_examples, training_items, user_sequences, item_catalog, user_summaries,
                       eval_candidates, dmpo, evaluation, backbone)
    scores, logs = [], []
    for n in context.params.few_shot_users:
        if n > len(training_examples):
            raise ValueError(
                f"dmpo.few_shot_users asks for {n} users; the training data set has {len(training_examples)} eligible"
            )
        sft, sft_log = context.sft(_model_name(f"sft_u{n}", training_examples, dataset), n)
        reference = reference_logprobs(sft, table_examples(training_examples, n), context.train_titles)
        model, log = context.preference(sft, reference, "dmpo", _model_name(f"dmpo_u{n}", training_examples, dataset), n)
        name = model.config.meta["model"]
        scores.append(_scores(model, context, name, score_cache))
        logs += [sft_log, log]
    if not scores:  # no sweep configured: empty tables of the right shape
        empty = pd.Series(dtype=str)
        return sampled_rows([], eval_candidates.head(0)).assign(model=empty, backbone_dtype=empty), training_log("", [])
    return pd.concat(scores, ignore_index=True), pd.concat(logs, ignore_index=True)


def _scores(model: LLMRecommender, context: _Context, name: str, cache: ScoreCache) -> pd.DataFrame:
    """A trained (not saved) model's score table, columns as ``dmpo_few_shot_scores`` has them."""
    table = score_table(model, context.user_sequences, context.eval_candidates, users=context.llm_users(),
                        summaries=context.summaries, splits=context.evaluation.llm_splits, batch_size=ROW_CHUNK,
                        progress=context.evaluation.progress, desc=name, cache=cache)
    return table.assign(model=name)[[*SCORE_COLUMNS, "model", "backbone_dtype"]]


def collect_models(*tables: pd.DataFrame) -> pd.DataFrame:
    """One table of several models' score tables, or of their training logs (each has a ``model`` column):
    ``dmpo_transfer_scores`` and ``dmpo_transfer_training_log`` (``sft_from_ml-1m``, ``dmpo_from_ml-1m``, ...)."""
    return pd.concat(tables, ignore_index=True)
