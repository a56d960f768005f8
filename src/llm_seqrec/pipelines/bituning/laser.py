"""The ``laser`` variant of the bituning stage: Laser Bi-Tuning and its ablations.

Four models, each the same code under its own parameters (``laser`` and ``laser.ablations``):
``laser``, ``laser_no_moe`` (one query expert), ``laser_no_prefix`` (no M-Former prefix, no ID
model) and ``laser_no_stage1`` (item encodings never trained). Each trains into a versioned
``<model>_adapter`` (the trained weights + config) and is scored into ``<model>_scores``: full ranking
over all items and the sampled protocol on ``eval_candidates``, both splits, for the LLM user sample.

Training (``models/bituning.py`` for the model) runs the shared loop twice: stage 1 for
``stage1_epochs`` epochs with the item side trainable and the item catalogue re-encoded at the start
of each epoch, then stage 2 for the remaining epochs with the item encodings frozen. Each stage
stops early on validation NDCG@10 (full ranking, a seeded sample of users) and keeps its best weights.
A training example is a user's training items before the last one, with the last as target (the
``train`` cutoff of the summarization stage, so its summaries fit).

A family may also have a preference-tuned model (``fusion_dmpo``: ``fusion.preference``): the trained
full model tuned further by DMPO or S-DPO on its candidate head, one positive against k sampled
negatives, with the trained model's logits as the frozen reference (``fit_preference``).

Optional inputs, off by default: LLM-TRSR's summaries in the user prompt (``use_summary``) and
RA-Rec's aligned item embeddings as a soft token per item (``prompts.aligned_id_tokens``). Their
datasets are inputs of every node all the same (a Kedro pipeline cannot depend on a parameter), so
the stage runs after summarization and alignment, as in a full ``kedro run``.
"""

from __future__ import annotations

from dataclasses import replace

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from kedro.pipeline import Node, Pipeline, pipeline

from llm_seqrec.data.leakage import check_inputs_precede_targets
from llm_seqrec.data.negatives import interacted_pairs
from llm_seqrec.data.schema import SPLITS, split_inputs
from llm_seqrec.evaluation.metrics import metrics_from_ranks
from llm_seqrec.evaluation.protocol import full_ranking_rows, llm_user_sample, sampled_rows
from llm_seqrec.llm.backbone import Backbone, load_backbone
from llm_seqrec.llm.device import choose_device
from llm_seqrec.models.bituning import BiTuning, BiTuningConfig, PromptConfig, Prompts, collate_users, length_buckets
from llm_seqrec.models.llm_recommender import sample_negatives
from llm_seqrec.models.losses import PREFERENCE_LOSSES
from llm_seqrec.models.mformer import MFormerConfig
from llm_seqrec.models.sasrec import SASRec
from llm_seqrec.params import (
    BITUNING_FAMILIES,
    BackboneParams,
    BiTuningPreferenceParams,
    EvaluationParams,
    LaserModelParams,
    LaserParams,
)
from llm_seqrec.pipelines import ABLATION
from llm_seqrec.training import fit, seed_everything, training_log

logger = logging.getLogger(__name__)

MODELS = LaserParams.models()
UPSTREAM = ("user_sequences", "item_catalog", "eval_candidates", "sasrec_model", "user_summaries", "aligned_item_embeddings")


# ---------------------------------------------------------------- nodes
def train_laser(
    user_sequences: pd.DataFrame,
    item_catalog: pd.DataFrame,
    sasrec_model: dict,
    user_summaries: pd.DataFrame,
    aligned_item_embeddings: pd.DataFrame,
    laser: dict,
    evaluation: dict,
    backbone: dict,
    *,
    model: str,
    family: str = "laser",
) -> tuple[dict, pd.DataFrame]:
    """Train model ``model`` of the Bi-Tuning ``family`` (``laser`` or ``fusion``; ``laser`` holds that
    family's parameter section) in its two stages; return its adapter (trained weights + config) and
    its training log (both stages)."""
    params = BITUNING_FAMILIES[family].model_validate(laser).model(model)
    exclude_seen = EvaluationParams.model_validate(evaluation).exclude_seen
    llm = _load_llm(backbone, params)
    seed_everything(params.training.seed)
    prompts = Prompts(_prompt_config(params), llm.tokenizer, _titles(item_catalog))
    id_model = SASRec.from_artifact(sasrec_model) if params.prefix else None
    mformer = (
        MFormerConfig(id_size=id_model.config.hidden_size, output_size=llm.hidden_size, **params.mformer.model_dump())
        if id_model is not None
        else None
    )
    config = BiTuningConfig(
        n_items=prompts.n_items,
        llm_hidden_size=llm.hidden_size,
        backbone=llm.name,
        rec_size=params.rec_size,
        n_suffix_tokens=params.n_suffix_tokens,
        temperature=params.temperature,
        balance_weight=params.balance_weight,
        mformer=mformer,
        aligned_id_tokens=params.prompts.aligned_id_tokens,
    )
    aligned = _aligned_table(aligned_item_embeddings, prompts.n_items) if config.aligned_id_tokens else None
    net = BiTuning(config, llm.model, prompts.items(), id_model.to(llm.device) if id_model is not None else None, aligned)
    logger.info(
        "%s: %s trainable parameters (M-Former, virtual tokens, projections); the LLM (%s) and SASRec stay frozen",
        model, f"{net.n_trainable_parameters():,}", llm.name,
    )
    summaries = _summaries(user_summaries, params.use_summary)
    examples = _training_examples(user_sequences, prompts, summaries)
    valid = _validation_users(user_sequences, prompts, summaries, params)
    log = fit_stages(net, model, examples, valid, params, exclude_seen).assign(backbone_dtype=llm.dtype_name)
    adapter = net.to_artifact(
        prompts=_prompt_config(params).to_dict(),
        use_summary=params.use_summary,
        id_model=_fingerprint(sasrec_model["state_dict"]) if id_model is not None else None,
        aligned_items=_fingerprint({"table": aligned}) if aligned is not None else None,
    )
    return adapter, log


def score_laser(
    adapter: dict,
    user_sequences: pd.DataFrame,
    item_catalog: pd.DataFrame,
    eval_candidates: pd.DataFrame,
    sasrec_model: dict,
    user_summaries: pd.DataFrame,
    aligned_item_embeddings: pd.DataFrame,
    laser: dict,
    evaluation: dict,
    backbone: dict,
    *,
    model: str,
    family: str = "laser",
) -> pd.DataFrame:
    """``<model>_scores``: full ranking and sampled candidates, both splits, the LLM user sample."""
    params = BITUNING_FAMILIES[family].model_validate(laser).model(model)
    ev = EvaluationParams.model_validate(evaluation)
    llm = _load_llm(backbone, params)
    net, prompts = restore(adapter, llm, item_catalog, sasrec_model, aligned_item_embeddings)
    summaries = _summaries(user_summaries, adapter["config"]["use_summary"])
    net.refresh_items(params.item_batch_size, progress=ev.progress)
    users = llm_user_sample(user_sequences, ev.llm_user_sample, ev.seed)
    rows = user_sequences[user_sequences["user_idx"].isin(users)].reset_index(drop=True)
    position = {int(u): r for r, u in enumerate(rows["user_idx"])}
    tables = []
    for split in SPLITS:
        inputs, _ = split_inputs(rows, split)
        check_inputs_precede_targets(rows, rows["user_idx"], split, inputs, what=f"{model} queries at {split}")
        user_prompts = _user_prompts(prompts, rows["user_idx"], inputs, summaries, split)
        scores = net.score_users(user_prompts, inputs, params.score_batch_size, progress=ev.progress)
        tables.append(_full_rows(scores, rows, split, ev.exclude_seen))
        candidates = eval_candidates[(eval_candidates["split"] == split) & eval_candidates["user_idx"].isin(users)]
        candidates = candidates.reset_index(drop=True)
        tables.append(sampled_rows(
            [scores[position[int(u)], np.asarray(c, dtype=np.int64)].double().numpy()
             for u, c in zip(candidates["user_idx"], candidates["candidates"], strict=True)],
            candidates,
        ))
    return pd.concat(tables, ignore_index=True).assign(backbone_dtype=llm.dtype_name)


def preference_tune(
    adapter: dict,
    user_sequences: pd.DataFrame,
    item_catalog: pd.DataFrame,
    sasrec_model: dict,
    user_summaries: pd.DataFrame,
    aligned_item_embeddings: pd.DataFrame,
    laser: dict,
    evaluation: dict,
    backbone: dict,
    *,
    model: str,
    family: str = "fusion",
) -> tuple[dict, pd.DataFrame]:
    """``model`` (``fusion_dmpo``): the family's trained full model (``adapter``) tuned further by DMPO
    or S-DPO on its candidate head (``<family>.preference``); return its adapter and training log."""
    family_params = BITUNING_FAMILIES[family].model_validate(laser)
    params, preference = family_params.model(model), family_params.preference
    exclude_seen = EvaluationParams.model_validate(evaluation).exclude_seen
    llm = _load_llm(backbone, params)
    seed_everything(preference.training.seed)
    net, prompts = restore(adapter, llm, item_catalog, sasrec_model, aligned_item_embeddings)
    summaries = _summaries(user_summaries, params.use_summary)
    examples = _training_examples(user_sequences, prompts, summaries)
    # Validation (early stopping, best epoch) as the family's, on preference.training's sample size.
    valid = _validation_users(user_sequences, prompts, summaries, params.model_copy(update={"training": preference.training}))
    logger.info("%s: %s's adapter tuned by %s, one positive against %d negatives per user (beta %s)", model,
                family, preference.loss, preference.negatives, preference.beta)
    log = fit_preference(net, model, examples, valid, params, preference, exclude_seen).assign(backbone_dtype=llm.dtype_name)
    config = {key: value for key, value in adapter["config"].items() if key != "model"}
    return net.to_artifact(**config, preference=preference.model_dump(mode="json")), log


def create_variant_pipeline(family: str = "laser") -> Pipeline:
    """The nodes of a Bi-Tuning family (``laser``, or ``fusion``: see ``fusion.py``) in its namespace."""
    models = BITUNING_FAMILIES[family].models()
    parameters = (f"params:{family}", "params:evaluation", "params:backbone")
    training_inputs = ["user_sequences", "item_catalog", "sasrec_model", "user_summaries", "aligned_item_embeddings",
                       *parameters]
    scoring_inputs = ["user_sequences", "item_catalog", "eval_candidates", "sasrec_model", "user_summaries",
                      "aligned_item_embeddings", *parameters]

    def model_nodes(name: str, step: str, train, inputs: list[str], tags: set[str]) -> list[Node]:
        """Node ``<step>_<name>`` trains model ``name`` with ``train``; ``score_<name>`` scores it."""
        return [
            Node(_for_model(train, name, family), inputs, [f"{name}_adapter", f"{name}_training_log"],
                 name=f"{step}_{name}", tags=tags),
            Node(_for_model(score_laser, name, family), [f"{name}_adapter", *scoring_inputs], f"{name}_scores",
                 name=f"score_{name}", tags=tags),
        ]

    nodes = [node for name in models
             for node in model_nodes(name, "train", train_laser, training_inputs, {ABLATION} if name != family else set())]
    tuned = BITUNING_FAMILIES[family].PREFERENCE_MODEL
    if tuned is not None:
        models = (*models, tuned)
        nodes += model_nodes(tuned, "preference_tune", preference_tune, [f"{family}_adapter", *training_inputs], set())
    # Catalog names stay as they are (``laser_adapter``, ``laser_scores``, ...): the evaluation
    # stage reads ``<model>_scores``; the namespace groups the nodes in kedro-viz.
    outputs = {f"{name}_{kind}" for name in models for kind in ("adapter", "scores", "training_log")}
    return pipeline(nodes, namespace=family, inputs=set(UPSTREAM), outputs=outputs, parameters=set(parameters))


def _for_model(func, model: str, family: str):
    """``func`` with ``model`` and ``family`` fixed, as a plain function: Kedro reads node functions'
    type hints, which it cannot from a ``functools.partial`` (it logs a warning per node)."""

    def node_func(*args):
        return func(*args, model=model, family=family)

    node_func.__name__ = node_func.__qualname__ = f"{func.__name__}[{model}]"
    return node_func


# ---------------------------------------------------------------- library glue
def restore(
    adapter: dict, llm: Backbone, item_catalog: pd.DataFrame, sasrec_model: dict, aligned_item_embeddings: pd.DataFrame
) -> tuple[BiTuning, Prompts]:
    """The trained model and its prompts from an adapter, the backbone, the catalogue, SASRec and
    the aligned item embeddings; the frozen inputs must be the ones it was trained with."""
    config = adapter["config"]
    prompts = Prompts(PromptConfig.from_dict(config["prompts"]), llm.tokenizer, _titles(item_catalog))
    stale = "this Laser adapter was trained on another {} version than the current one: re-run `kedro run --pipelines=bituning`"
    id_model = aligned = None
    if config["id_model"] is not None:
        if config["id_model"] != _fingerprint(sasrec_model["state_dict"]):
            raise ValueError(stale.format("sasrec_model"))
        id_model = SASRec.from_artifact(sasrec_model).to(llm.device)
    if config["aligned_items"] is not None:
        aligned = _aligned_table(aligned_item_embeddings, prompts.n_items)
        if config["aligned_items"] != _fingerprint({"table": aligned}):
            raise ValueError(stale.format("aligned_item_embeddings"))
    net = BiTuning.from_artifact(adapter, llm.model, llm.name, prompts.items(), id_model, aligned)
    return net, prompts


def _load_llm(backbone: dict, params: LaserModelParams) -> Backbone:
    llm = load_backbone(**BackboneParams.model_validate(backbone).loader_kwargs())
    device = choose_device(params.training.device)
    if device != llm.device:  # the training loop puts the trainable parts on laser.training.device
        llm.model.to(device)
        llm.device = device
    return llm


def _prompt_config(params: LaserModelParams) -> PromptConfig:
    return PromptConfig(**params.prompts.model_dump())


def _aligned_table(aligned_item_embeddings: pd.DataFrame, n_items: int) -> torch.Tensor:
    """RA-Rec's aligned item embeddings as ``[n_items + 1, hidden]`` (row 0, padding, zero)."""
    frame = aligned_item_embeddings.sort_values("item_idx")
    if frame["item_idx"].tolist() != list(range(1, n_items + 1)):
        raise ValueError(f"aligned_item_embeddings must hold items 1..{n_items} of item_catalog once each: "
                         "re-run `kedro run --pipelines=alignment`")
    table = torch.from_numpy(np.stack(frame["embedding"].to_numpy()).astype(np.float32))
    return torch.cat([torch.zeros(1, table.shape[1]), table])


def _titles(item_catalog: pd.DataFrame) -> dict[int, str]:
    return dict(zip(item_catalog["item_idx"].astype(int), item_catalog["title"].astype(str), strict=True))


def _summaries(user_summaries: pd.DataFrame, use_summary: bool) -> dict[tuple[int, str], str] | None:
    """(user_idx, cutoff) -> summary, or None when summaries are not in the prompts."""
    if not use_summary:
        return None
    return {
        (int(u), str(c)): str(s)
        for u, c, s in zip(user_summaries["user_idx"], user_summaries["cutoff"], user_summaries["summary"], strict=True)
    }


def _user_prompts(
    prompts: Prompts, users: Sequence[int], inputs: Sequence[Sequence[int]], summaries: Mapping | None, cutoff: str
) -> list[list[int]]:
    """Each user's prompt at ``cutoff``; with summaries in use, each user must have one there."""
    if summaries is None:
        return [prompts.user(items) for items in inputs]
    missing = [int(u) for u in users if (int(u), cutoff) not in summaries]
    if missing:
        raise ValueError(
            f"use_summary is on (laser or fusion) but user_summaries has no {cutoff!r} summary for {len(missing)} users "
            f"(e.g. {missing[:5]}): run `kedro run --pipelines=summarization` with the same evaluation settings"
        )
    return [prompts.user(items, summaries[(int(u), cutoff)]) for u, items in zip(users, inputs, strict=True)]


class UserSet:
    """Users with prompt ids, item histories and targets, in a fixed order."""

    def __init__(self, frame: pd.DataFrame, prompts: list[list[int]], histories: list[list[int]], targets: list[int]) -> None:
        self.frame, self.prompts, self.histories, self.targets = frame, prompts, histories, targets

    def __len__(self) -> int:
        return len(self.targets)


def _training_examples(user_sequences: pd.DataFrame, prompts: Prompts, summaries: Mapping | None) -> UserSet:
    """One example per user with at least two training items: the items before the last, and the last.
    With summaries in use, only the users summarised at that cutoff (``summarization.train_users``)."""
    frame = user_sequences[user_sequences["train_items"].map(len) >= 2]
    if summaries is not None:
        frame = frame[[(int(u), "train") in summaries for u in frame["user_idx"]]]
    if frame.empty:
        raise ValueError(
            "no Laser training examples: users need two training items"
            + (" and a 'train' summary (summarization.train_users)" if summaries is not None else "")
        )
    histories = [[int(i) for i in items[:-1]] for items in frame["train_items"]]
    targets = [int(items[-1]) for items in frame["train_items"]]
    check_inputs_precede_targets(frame, frame["user_idx"], "train", histories, targets=targets,
                                 what="Laser training users")
    return UserSet(frame, _user_prompts(prompts, frame["user_idx"], histories, summaries, "train"), histories, targets)


def _validation_users(user_sequences: pd.DataFrame, prompts: Prompts, summaries: Mapping | None, params: LaserModelParams) -> UserSet:
    """The seeded validation sample (``training.eval_users``) at the valid cutoff. With summaries, only
    users summarised there (the LLM user sample) can be shown theirs."""
    frame = user_sequences
    if summaries is not None:
        frame = frame[[(int(u), "valid") in summaries for u in frame["user_idx"]]]
    n = params.training.eval_users
    if n is not None and n < len(frame):
        chosen = np.random.default_rng(params.training.seed).choice(len(frame), n, replace=False)
        frame = frame.iloc[np.sort(chosen)]
    frame = frame.reset_index(drop=True)
    inputs, targets = split_inputs(frame, "valid")
    check_inputs_precede_targets(frame, frame["user_idx"], "valid", inputs, targets=targets,
                                 what="Laser validation users")
    return UserSet(frame, _user_prompts(prompts, frame["user_idx"], inputs, summaries, "valid"), inputs, targets)


def fit_stages(
    net: BiTuning, name: str, examples: UserSet, valid: UserSet, params: LaserModelParams, exclude_seen: bool
) -> pd.DataFrame:
    """Stage 1 (item side trainable, catalogue re-encoded per epoch), then stage 2 (items frozen), each
    through the shared loop; returns the training log of both (``stage`` 1 and 2)."""
    training = params.training
    make_batches = _epoch_batches(net, examples, params.train_users, training.batch_size, params, training.progress)
    digest = _digest(examples.prompts, examples.histories, examples.targets, valid.prompts, valid.targets)
    # Settings that change no epoch already done stay out, as in the loop's own RESUMABLE_CHANGES.
    same_run = params.model_dump(mode="json", exclude={"training", "stage1_epochs", "item_batch_size", "score_batch_size"})
    run_config = {"model": net.config.to_dict(), "params": same_run,
                  "exclude_seen": exclude_seen, "data": digest}
    stages = [(1, params.stage1_epochs), (2, training.epochs - params.stage1_epochs)]
    logs = []
    for stage, epochs in stages:
        if epochs == 0:
            continue
        net.set_item_side_trainable(stage == 1)
        # Stage 2 continues from stage 1's result, so its checkpoint is only valid for that start.
        start = _fingerprint(net.state_dict())
        result = fit(
            net,
            lambda model, batch: model.loss(**batch),
            make_batches,
            _validator(valid, params, exclude_seen, training.progress),
            replace(training, epochs=epochs),
            f"{name}_stage{stage}",
            {**run_config, "stage": stage, "start": start},
        )
        logs.append(training_log(name, result.history, stage))
    return pd.concat(logs, ignore_index=True)


def fit_preference(
    net: BiTuning,
    name: str,
    examples: UserSet,
    valid: UserSet,
    params: LaserModelParams,
    preference: BiTuningPreferenceParams,
    exclude_seen: bool,
) -> pd.DataFrame:
    """Preference tuning after stage 2 through the shared loop: per training user its target against
    ``preference.negatives`` sampled items it never touched, rewards against the starting model's
    candidate logits (the reference: computed once, in eval mode, and held in memory as a tensor, so
    no second model is kept); the item side stays frozen. Returns its training log (``stage`` 3)."""
    training = preference.training
    net.set_item_side_trainable(False)
    net.refresh_items(params.item_batch_size, progress=training.progress)
    candidates = preference_candidates(examples, net.config.n_items, preference.negatives, training.seed)
    net.eval()
    reference = net.score_candidates(examples.prompts, examples.histories, candidates, params.score_batch_size)
    objective = PREFERENCE_LOSSES[preference.loss]

    def loss(model: BiTuning, batch: dict) -> torch.Tensor:
        return model.preference_loss(batch["prompt"], batch["length"], batch["candidates"], batch["reference"],
                                     objective, preference.beta, preference.sft_weight, batch.get("history"))

    make_batches = _epoch_batches(net, examples, preference.train_users, training.batch_size, params,
                                  training.progress, extra={"candidates": candidates, "reference": reference})
    run_config = {
        "model": net.config.to_dict(),
        "preference": preference.model_dump(mode="json", exclude={"training"}),
        "exclude_seen": exclude_seen,
        "data": _digest(examples.prompts, examples.histories, candidates.tolist(), valid.prompts, valid.targets),
        "start": _fingerprint(net.state_dict()),
    }
    validate = _validator(valid, params, exclude_seen, training.progress)
    result = fit(net, loss, make_batches, validate, training, f"{name}_preference", run_config)
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


def _epoch_batches(
    net: BiTuning,
    examples: UserSet,
    train_users: int | None,
    batch_size: int,
    params: LaserModelParams,
    progress: bool,
    extra: Mapping[str, torch.Tensor] | None = None,
):
    """``make_batches`` for the shared loop: per epoch ``train_users`` seeded examples (all if None) in
    length-bucketed batches of ``batch_size``, in random order, each with the examples' targets and
    their rows of every ``extra`` tensor."""
    id_max_len = net.frozen.id_model.config.max_len if net.frozen.id_model is not None else None

    def make_batches(epoch: int, generator: torch.Generator) -> Iterator[dict]:
        # The epoch's item encodings: re-encoded in stage 1, where the last epoch changed the item
        # side; a no-op once the item side is frozen and encoded.
        net.refresh_items(params.item_batch_size, progress=progress)
        order = torch.randperm(len(examples), generator=generator)[: train_users or len(examples)].tolist()
        buckets = length_buckets([len(examples.prompts[i]) for i in order], batch_size)
        for b in torch.randperm(len(buckets), generator=generator).tolist():
            rows = [order[i] for i in buckets[b]]
            batch = collate_users([examples.prompts[r] for r in rows], [examples.histories[r] for r in rows], id_max_len)
            batch["target"] = torch.tensor([examples.targets[r] for r in rows], dtype=torch.long)
            batch.update({key: values[rows] for key, values in (extra or {}).items()})
            yield batch

    return make_batches


def _validator(valid: UserSet, params: LaserModelParams, exclude_seen: bool, progress: bool):
    """``validate`` for the shared loop: full-ranking NDCG@10 of the validation users."""

    def validate(model: BiTuning) -> float:
        model.refresh_items(params.item_batch_size, progress=progress)
        scores = model.score_users(valid.prompts, valid.histories, params.score_batch_size, progress=progress)
        ranks = _full_rows(scores, valid.frame, "valid", exclude_seen)["rank"].to_numpy()
        return metrics_from_ranks(ranks, [10], "full")["ndcg@10"]

    return validate


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _full_rows(scores: torch.Tensor, users: pd.DataFrame, split: str, exclude_seen: bool) -> pd.DataFrame:
    """Full-ranking score rows from scores already computed in ``users``' row order (length-bucketed
    batches, not the protocol's), handed to the protocol as one batch."""

    def precomputed(inputs: list[list[int]]) -> torch.Tensor:
        if len(inputs) != len(scores):
            raise ValueError(f"expected all {len(scores)} users in one batch, got {len(inputs)}")
        return scores

    return full_ranking_rows(precomputed, users, split, exclude_seen, batch_size=max(1, len(users)))


def _fingerprint(state_dict: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        digest.update(key.encode())
        digest.update(state_dict[key].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
