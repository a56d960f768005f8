"""Bi-Tuning's training procedures (Laser and fusion; no Kedro): the two stages, preference tuning,
and the scoring of a trained adapter.

``train_bituning`` runs the shared loop twice: stage 1 for ``stage1_epochs`` epochs with the item side
trainable and the item catalogue re-encoded at the start of each epoch, then stage 2 for the remaining
epochs with the item encodings frozen. Each stage stops early on validation NDCG@10 (full ranking, a
seeded sample of users, ``evaluation.scoring.validation_metric``) and keeps its best weights.

``preference_tune_bituning`` tunes a trained model further by DMPO or S-DPO on its candidate head, one
positive against k sampled negatives, with the trained model's logits as the frozen reference.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Annotated, Literal

import pandas as pd
import torch
from annotated_types import Ge, Gt
from pydantic import ConfigDict

from llm_seqrec.data.fingerprint import data_fingerprint, weights_fingerprint
from llm_seqrec.data.negatives import interacted_pairs, sample_negatives
from llm_seqrec.data.schema import SPLITS
from llm_seqrec.evaluation.score_cache import ScoreCache
from llm_seqrec.evaluation.scoring import score_table, validation_metric
from llm_seqrec.llm.backbone import Backbone
from llm_seqrec.models.bituning import BiTuning
from llm_seqrec.models.bituning_prompts import BiTuningRanker, PromptConfig, collate_users, length_buckets, score_candidates
from llm_seqrec.models.losses import PREFERENCE_LOSSES
from llm_seqrec.models.mformer import MFormerSettings
from llm_seqrec.training.bituning_data import (
    Summaries,
    UserSet,
    build,
    restore,
    summaries_by_cutoff,
    training_examples,
    validation_users,
)
from llm_seqrec.training.config import TrainingConfig
from llm_seqrec.training.log import training_log
from llm_seqrec.training.loop import fit
from llm_seqrec.training.state import seed_everything

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BiTuningPreferenceConfig:
    """DMPO after Bi-Tuning (``fusion.preference``; the model ``fusion_dmpo``): the trained adapter tuned
    further on its candidate head, one positive against ``negatives`` items the user never touched."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    loss: Literal["dmpo", "sdpo"] = "dmpo"
    negatives: Annotated[int, Ge(1)] = 3  # k per training user, sampled once (the reference logits are computed once)
    beta: Annotated[float, Gt(0)] = 1.0
    sft_weight: Annotated[float, Ge(0)] = 0.0  # weight of the Bi-Tuning contrastive loss added to the preference loss
    train_users: Annotated[int, Ge(1)] | None = 128  # seeded users per epoch; None = every user
    training: TrainingConfig = TrainingConfig(epochs=1, batch_size=8, lr=5e-4, patience=1, eval_users=64)


def train_bituning(
    llm: Backbone, name: str, user_sequences: pd.DataFrame, item_catalog: pd.DataFrame, sasrec_model: dict,
    user_summaries: pd.DataFrame, aligned_item_embeddings: pd.DataFrame, *, prefix: bool, mformer: MFormerSettings,
    prompts: PromptConfig, n_suffix_tokens: int, rec_size: int, temperature: float, balance_weight: float,
    use_summary: bool, train_users: int | None, stage1_epochs: int, item_batch_size: int, score_batch_size: int,
    training: TrainingConfig, exclude_seen: bool, stage1_negatives: int | None = None,
) -> tuple[dict, pd.DataFrame]:
    """Model ``name`` built (``prefix``: the M-Former over the frozen SASRec) and trained in its two
    stages; returns its adapter (trained weights + config) and its training log (both stages)."""
    seed_everything(training.seed)
    net, user_prompts, frozen = build(
        llm, item_catalog, sasrec_model, aligned_item_embeddings, prompts=prompts, mformer=mformer if prefix else None,
        rec_size=rec_size, n_suffix_tokens=n_suffix_tokens, temperature=temperature, balance_weight=balance_weight,
    )
    logger.info("%s: %s trainable parameters (M-Former, virtual tokens, projections); the LLM (%s) and SASRec stay frozen",
                name, f"{net.n_trainable_parameters():,}", llm.name)
    summaries = summaries_by_cutoff(user_summaries, use_summary)
    examples = training_examples(user_sequences, user_prompts, summaries)
    valid = validation_users(user_sequences, user_prompts, summaries, training.eval_users, training.seed)
    ranker = BiTuningRanker(net, user_prompts, use_summary, llm.dtype_name, score_batch_size, item_batch_size)
    log = fit_stages(ranker, name, examples, valid, summaries, training=training, stage1_epochs=stage1_epochs,
                     train_users=train_users, exclude_seen=exclude_seen, stage1_negatives=stage1_negatives)
    return net.to_artifact(prompts=prompts.to_dict(), use_summary=use_summary, **frozen), log.assign(backbone_dtype=llm.dtype_name)


def score_bituning(adapter: dict, llm: Backbone, user_sequences: pd.DataFrame, item_catalog: pd.DataFrame,
                   eval_candidates: pd.DataFrame, sasrec_model: dict, user_summaries: pd.DataFrame,
                   aligned_item_embeddings: pd.DataFrame, *, users, exclude_seen: bool, item_batch_size: int,
                   score_batch_size: int, progress: bool, desc: str, cache: ScoreCache | None = None,
                   splits: Sequence[str] = SPLITS) -> pd.DataFrame:
    """The adapter's ``<model>_scores`` for ``users``: full ranking and sampled candidates on ``splits``.
    All users (those ``cache`` lacks) go to the model in one call, which batches them by prompt length."""
    ranker = restore(adapter, llm, item_catalog, sasrec_model, aligned_item_embeddings, batch_size=score_batch_size,
                     item_batch_size=item_batch_size, progress=progress)
    return score_table(ranker, user_sequences, eval_candidates, exclude_seen=exclude_seen, users=users,
                       summaries=summaries_by_cutoff(user_summaries, ranker.use_summary), splits=splits, batch_size=None,
                       progress=progress, desc=desc, cache=cache)


def preference_tune_bituning(
    adapter: dict, llm: Backbone, name: str, user_sequences: pd.DataFrame, item_catalog: pd.DataFrame,
    sasrec_model: dict, user_summaries: pd.DataFrame, aligned_item_embeddings: pd.DataFrame, *,
    preference: BiTuningPreferenceConfig, item_batch_size: int, score_batch_size: int, exclude_seen: bool,
) -> tuple[dict, pd.DataFrame]:
    """The adapter's model tuned further by ``preference``; returns its adapter and training log.
    Validation (early stopping, best epoch) as in training, on ``preference.training``'s sample."""
    training = preference.training
    seed_everything(training.seed)
    ranker = restore(adapter, llm, item_catalog, sasrec_model, aligned_item_embeddings, batch_size=score_batch_size,
                     item_batch_size=item_batch_size)
    summaries = summaries_by_cutoff(user_summaries, ranker.use_summary)
    examples = training_examples(user_sequences, ranker.prompts, summaries)
    valid = validation_users(user_sequences, ranker.prompts, summaries, training.eval_users, training.seed)
    logger.info("%s: its adapter tuned by %s, one positive against %d negatives per user (beta %s)", name,
                preference.loss, preference.negatives, preference.beta)
    log = fit_preference(ranker, name, examples, valid, summaries, preference, exclude_seen=exclude_seen)
    config = {key: value for key, value in adapter["config"].items() if key != "model"}
    settings = json.loads(json.dumps(asdict(preference), default=str))  # paths as strings, as the parameters hold them
    del settings["training"]["processes"]  # how many processes shared the batches does not name the model
    return ranker.net.to_artifact(**config, preference=settings), log.assign(backbone_dtype=llm.dtype_name)


def fit_stages(ranker: BiTuningRanker, name: str, examples: UserSet, valid: UserSet, summaries: Summaries | None, *,
               training: TrainingConfig, stage1_epochs: int, train_users: int | None, exclude_seen: bool,
               stage1_negatives: int | None = None) -> pd.DataFrame:
    """Stage 1 (item side trainable, catalogue re-encoded per epoch), then stage 2 (items frozen), each
    through the shared loop; returns the training log of both (``stage`` 1 and 2). ``stage1_negatives``
    N: stage 1's loss over each batch's targets and N seeded random items, all encoded fresh (None: over
    every item, the targets fresh and the rest from the catalogue encoded at the epoch's start)."""
    net, ranker = ranker.net, replace(ranker, progress=training.progress)
    # The prompts in the data fingerprint stand for the prompt settings and use_summary.
    run_config = {"model": net.config.to_dict(), "train_users": train_users, "exclude_seen": exclude_seen,
                  "data": data_fingerprint(examples.prompts, examples.histories, examples.targets, valid.prompts,
                                           valid.targets)}
    if stage1_negatives is not None:  # absent by default, so earlier checkpoints still resume
        run_config["stage1_negatives"] = stage1_negatives
    logs = []
    for stage, epochs in ((1, stage1_epochs), (2, training.epochs - stage1_epochs)):
        if epochs == 0:
            continue
        net.set_item_side_trainable(stage == 1)
        # Stage 2 continues from stage 1's result, so its checkpoint is only valid for that start.
        start = weights_fingerprint(net.state_dict())
        make_batches = _epoch_batches(ranker, examples, train_users, training.batch_size,
                                      negatives=stage1_negatives if stage == 1 else None)
        result = fit(net, lambda model, batch: model.loss(**batch), make_batches,
                     _validator(ranker, valid, summaries, exclude_seen), replace(training, epochs=epochs),
                     f"{name}_stage{stage}", {**run_config, "stage": stage, "start": start})
        logs.append(training_log(name, result.history, stage))
    return pd.concat(logs, ignore_index=True)


def fit_preference(ranker: BiTuningRanker, name: str, examples: UserSet, valid: UserSet, summaries: Summaries | None,
                   preference: BiTuningPreferenceConfig, *, exclude_seen: bool) -> pd.DataFrame:
    """Preference tuning after stage 2 through the shared loop: per training user its target against
    ``preference.negatives`` sampled items it never touched, rewards against the starting model's
    candidate logits (the reference: computed once, in eval mode, and held in memory as a tensor, so
    no second model is kept); the item side stays frozen. Returns its training log (``stage`` 3)."""
    training = preference.training
    net, ranker = ranker.net, replace(ranker, progress=training.progress)
    net.set_item_side_trainable(False)
    net.refresh_items(ranker.item_batch_size, progress=training.progress)
    candidates = preference_candidates(examples, net.config.n_items, preference.negatives, training.seed)
    net.eval()
    reference = score_candidates(net, examples.prompts, examples.histories, candidates, ranker.batch_size)
    objective = PREFERENCE_LOSSES[preference.loss]

    def loss(model: BiTuning, batch: dict) -> torch.Tensor:
        return model.preference_loss(batch["prompt"], batch["length"], batch["candidates"], batch["reference"],
                                     objective, preference.beta, preference.sft_weight, batch.get("history"))

    make_batches = _epoch_batches(ranker, examples, preference.train_users, training.batch_size,
                                  extra={"candidates": candidates, "reference": reference})
    run_config = {
        "model": net.config.to_dict(),
        "preference": {key: value for key, value in asdict(preference).items() if key != "training"},
        "exclude_seen": exclude_seen,
        "data": data_fingerprint(examples.prompts, examples.histories, candidates, valid.prompts, valid.targets),
        "start": weights_fingerprint(net.state_dict()),
    }
    result = fit(net, loss, make_batches, _validator(ranker, valid, summaries, exclude_seen), training,
                 f"{name}_preference", run_config)
    return training_log(name, result.history, 3)


def preference_candidates(examples: UserSet, n_items: int, k: int, seed: int) -> torch.Tensor:
    """``[N, 1 + k]``: each example's target, then ``k`` distinct items its user never interacted with
    (training items and both held-out targets excluded), seeded."""
    generator = torch.Generator().manual_seed(seed)
    users, items = interacted_pairs(examples.frame)
    touched = pd.Series(items).groupby(users).agg(set)
    rows = [
        [target, *sample_negatives(n_items, touched[int(user)], k, generator)]
        for target, user in zip(examples.targets, examples.frame["user_idx"], strict=True)
    ]
    return torch.tensor(rows, dtype=torch.long).reshape(len(rows), 1 + k)


def _epoch_batches(ranker: BiTuningRanker, examples: UserSet, train_users: int | None, batch_size: int,
                   extra: Mapping[str, torch.Tensor] | None = None, negatives: int | None = None):
    """``make_batches`` for the shared loop: per epoch ``train_users`` seeded examples (all if None) in
    length-bucketed batches of ``batch_size``, in random order, each with the examples' targets and
    their rows of every ``extra`` tensor, and with ``negatives`` N, N seeded random item ids."""
    net = ranker.net
    id_max_len = net.frozen.id_model.config.max_len if net.frozen.id_model is not None else None

    def make_batches(epoch: int, generator: torch.Generator) -> Iterator[dict]:
        # The epoch's item encodings: re-encoded in stage 1, where the last epoch changed the item
        # side; a no-op once the item side is frozen and encoded.
        net.refresh_items(ranker.item_batch_size, progress=ranker.progress)
        order = torch.randperm(len(examples), generator=generator)[: train_users or len(examples)].tolist()
        buckets = length_buckets([len(examples.prompts[i]) for i in order], batch_size)
        for b in torch.randperm(len(buckets), generator=generator).tolist():
            rows = [order[i] for i in buckets[b]]
            batch = collate_users([examples.prompts[r] for r in rows], [examples.histories[r] for r in rows], id_max_len)
            batch["target"] = torch.tensor([examples.targets[r] for r in rows], dtype=torch.long)
            batch.update({key: values[rows] for key, values in (extra or {}).items()})
            if negatives is not None:
                batch["negatives"] = torch.randint(1, net.config.n_items + 1, (negatives,), generator=generator)
            yield batch

    return make_batches


def _validator(ranker: BiTuningRanker, valid: UserSet, summaries: Summaries | None, exclude_seen: bool):
    """``validate`` for the shared loop: full-ranking NDCG@10 of the validation users (the loop's model
    is the ranker's)."""
    return lambda _model: validation_metric(ranker, valid.frame, exclude_seen=exclude_seen, summaries=summaries,
                                            batch_size=None, desc="validating")


__all__ = ["BiTuningPreferenceConfig", "fit_preference", "fit_stages", "preference_candidates",
           "preference_tune_bituning", "score_bituning", "train_bituning"]
