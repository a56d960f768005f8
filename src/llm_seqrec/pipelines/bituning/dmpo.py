"""The ``dmpo`` variant (DMPO, with S-DPO and SFT): a LoRA adapter that answers a user's recent items
(and summary, where the summary cache has one) with the next item's title.

1. ``make_training_examples``: the ``train`` cutoff of seeded training users (summarised users first,
   so smaller sets are prefixes of larger ones), each with k negatives sampled once from items outside
   the user's training items. In ``dmpo_transfer`` they come from ``train_dataset`` (cross-domain),
   whose users have no summaries, so then no prompt shows one.
2. ``train_sft``: supervised fine-tuning on the positive titles → model ``sft``.
3. ``compute_reference_logprobs``: πref is the SFT adapter. Its summed answer log-probabilities of
   every example's positive and negatives are computed once, in eval mode, and persisted with the
   SFT adapter's fingerprint; ``dmpo`` and ``sdpo`` both read them, so no frozen copy of the model
   runs during preference training.
4. ``train_preference``: from the SFT adapter, DMPO's loss → ``dmpo``; S-DPO's → ``sdpo``.
5. ``score_dmpo``: every shared candidate's title log-likelihood (per token) on the LLM user sample.
6. ``few_shot_sweep``: SFT + DMPO per size in ``dmpo.few_shot_users`` → ``dmpo_u<n>``.

Score tables carry a ``model`` column naming the row's model: ``dmpo_few_shot_scores`` holds several
(``dmpo_u64``, ...), and a cross-domain model is named after its training data set too
(``dmpo_from_ml-1m`` evaluated on the ``dataset.name`` data set).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch
from kedro.pipeline import Node, Pipeline

from llm_seqrec.data.leakage import check_inputs_precede_targets
from llm_seqrec.evaluation.protocol import sampled_rows
from llm_seqrec.llm.backbone import Backbone, load_backbone
from llm_seqrec.llm.prompts import item_titles
from llm_seqrec.models.llm_recommender import (
    Example,
    LLMRecommender,
    LoraSettings,
    PromptSettings,
    RecommenderConfig,
    adapter_fingerprint,
    data_fingerprint,
    fit_preference,
    fit_sft,
    llm_sample_rows,
    reference_logprobs,
    sample_negatives,
    sampled_ndcg5,
    score_candidates,
    summaries_by_cutoff,
    train_cutoff_examples,
    training_users,
    validation_rows,
)
from llm_seqrec.params import BackboneParams, DatasetParams, DMPOParams, EvaluationParams
from llm_seqrec.pipelines import TRANSFER
from llm_seqrec.pipelines.bituning.trsr import score_adapter
from llm_seqrec.pipelines.data_processing.nodes import prepare_interactions, split_leave_one_out
from llm_seqrec.training import seed_everything, training_log

EXAMPLE_COLUMNS = ["user_idx", "domain", "history", "target", "negatives", "summary"]
REFERENCE_COLUMNS = ["user_idx", "items", "logprob", "sft_adapter"]


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
        interactions, catalog, _ = prepare_interactions(params.train_dataset.model_dump(), data_processing, evaluation)
        sequences, domain = split_leave_one_out(interactions), params.train_dataset.name
    n_users = max([params.train_users, *params.few_shot_users])
    users = training_users(sequences, sorted(summaries), n_users, params.seed)
    examples = train_cutoff_examples(sequences, users, summaries)
    generator = torch.Generator().manual_seed(params.seed)
    n_items = int(catalog["item_idx"].max())
    rows = [
        (ex.user_idx, domain, list(ex.history[-params.recent_items :]), ex.target,
         list(sample_negatives(n_items, {*ex.history, ex.target}, params.negatives, generator)), ex.summary)
        for ex in examples
    ]
    table = pd.DataFrame(rows, columns=EXAMPLE_COLUMNS)
    check_inputs_precede_targets(sequences, table["user_idx"], "train", table["history"],
                                 targets=table["target"], what=f"dmpo.training_examples ({domain})")
    used = {i for h, t, n in zip(table["history"], table["target"], table["negatives"], strict=True) for i in (*h, t, *n)}
    items = catalog.loc[catalog["item_idx"].isin(used), ["item_idx", "title"]].reset_index(drop=True)
    return table, items


def _examples(training_examples: pd.DataFrame, n: int) -> list[Example]:
    rows = training_examples[["user_idx", "history", "target", "negatives", "summary"]].head(n)
    return [
        Example(int(u), tuple(int(i) for i in h), int(t), s if isinstance(s, str) else None, tuple(int(i) for i in neg))
        for u, h, t, neg, s in rows.itertuples(index=False)
    ]


def _model_name(base: str, training_examples: pd.DataFrame, dataset: dict) -> str:
    """``base``, or ``base_from_<training data set>`` when trained on another data set than evaluated."""
    domain = str(training_examples["domain"].iloc[0])
    return base if domain == DatasetParams.model_validate(dataset).name else f"{base}_from_{domain}"


class _Context:
    """What every training node here needs: parameters, the backbone, titles, validation rows."""

    def __init__(self, training_examples, training_items, user_sequences, item_catalog, user_summaries,
                 eval_candidates, dmpo, evaluation, backbone) -> None:
        self.params = DMPOParams.model_validate(dmpo)
        self.evaluation = EvaluationParams.model_validate(evaluation)
        self.backbone = BackboneParams.model_validate(backbone)
        self.training_examples = training_examples
        self.train_titles = item_titles(training_items, self.backbone.max_item_chars)
        self.eval_titles = item_titles(item_catalog, self.backbone.max_item_chars)
        self.user_sequences = user_sequences
        self.summaries = summaries_by_cutoff(user_summaries)
        self.rows = llm_sample_rows(eval_candidates, user_sequences, self.evaluation.llm_user_sample, self.evaluation.seed)

    def load_backbone(self) -> Backbone:
        return load_backbone(**self.backbone.loader_kwargs())

    def validate(self, n_users: int | None, seed: int):
        valid = validation_rows(self.rows, n_users, seed)
        return lambda m: sampled_ndcg5(m, self.eval_titles, self.user_sequences, valid, self.summaries)

    def sft(self, name: str, n_users: int) -> tuple[LLMRecommender, pd.DataFrame]:
        """A fresh LoRA adapter fine-tuned on the first ``n_users`` examples' positive titles."""
        p = self.params
        examples = _examples(self.training_examples, n_users)
        seed_everything(p.sft.seed)
        llm = self.load_backbone()
        config = RecommenderConfig(
            head="likelihood",
            backbone=llm.name,
            lora=LoraSettings(**{**p.lora.model_dump(), "target_modules": tuple(p.lora.target_modules)}),
            # Cross-domain training users have no summaries: keep the evaluation prompts like theirs.
            prompt=PromptSettings(p.recent_items, p.use_summary and p.train_dataset is None, p.summary_tokens),
            length_normalize=p.length_normalize,
            meta={"model": name, "train_users": len(examples), "domain": str(self.training_examples["domain"].iloc[0])},
        )
        model = LLMRecommender(llm, config)
        result = fit_sft(
            model, examples, self.train_titles, p.sft, name,
            validate=self.validate(p.sft.eval_users, p.sft.seed),
            run_config={"model": config.to_dict(), "data": data_fingerprint(examples)},
        )
        return model, training_log(name, result.history, backbone_dtype=model.backbone_dtype)

    def preference(
        self, sft: LLMRecommender, reference: torch.Tensor, loss: str, name: str, n_users: int
    ) -> tuple[LLMRecommender, pd.DataFrame]:
        """``sft`` trained further with the ``loss`` preference objective against ``reference``."""
        p = self.params
        examples = _examples(self.training_examples, n_users)
        sft.config = dataclasses.replace(
            sft.config,
            meta={**sft.config.meta, "model": name, "loss": loss, "beta": p.beta, "negatives": p.negatives,
                  "sft_weight": p.sft_weight, "reference": f"sft adapter {adapter_fingerprint(sft.adapter_state_dict())}"},
        )
        result = fit_preference(
            sft, examples, self.train_titles, reference, loss, p.beta, p.sft_weight, p.preference, name,
            validate=self.validate(p.preference.eval_users, p.preference.seed),
            run_config={"model": sft.config.to_dict(), "data": data_fingerprint(examples, reference.tolist())},
        )
        return sft, training_log(name, result.history, backbone_dtype=sft.backbone_dtype)

    def score(self, model: LLMRecommender, name: str) -> pd.DataFrame:
        scores = score_candidates(
            model, self.eval_titles, self.user_sequences, self.rows, self.summaries,
            progress=self.evaluation.progress, desc=name,
        )
        return sampled_rows(scores, self.rows).assign(model=name, backbone_dtype=model.backbone_dtype)


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
    model = LLMRecommender.from_artifact(sft_adapter, load_backbone(**backbone_params.loader_kwargs()))
    examples = _examples(training_examples, params.train_users)
    reference = reference_logprobs(model, examples, item_titles(training_items, backbone_params.max_item_chars))
    return _reference_table(examples, reference, adapter_fingerprint(sft_adapter["state_dict"]))


def _reference_table(examples: list[Example], reference: torch.Tensor, fingerprint: str) -> pd.DataFrame:
    return pd.DataFrame(
        [
            (ex.user_idx, [ex.target, *ex.negatives], values, fingerprint)
            for ex, values in zip(examples, reference.double().tolist(), strict=True)
        ],
        columns=REFERENCE_COLUMNS,
    )


def train_preference(sft_adapter: dict, reference_logprobs: pd.DataFrame, training_examples, training_items,
                     user_sequences, item_catalog, user_summaries, eval_candidates, dmpo: dict, evaluation: dict,
                     backbone: dict, dataset: dict, loss: str) -> tuple[dict, pd.DataFrame]:
    """``dmpo.adapter`` (``loss="dmpo"``) or ``dmpo.sdpo_adapter`` (``"sdpo"``), from the SFT adapter."""
    context = _Context(training_examples, training_items, user_sequences, item_catalog, user_summaries,
                       eval_candidates, dmpo, evaluation, backbone)
    sft = LLMRecommender.from_artifact(sft_adapter, context.load_backbone())
    examples = _examples(training_examples, context.params.train_users)
    fingerprint = adapter_fingerprint(sft_adapter["state_dict"])
    expected = [(ex.user_idx, [ex.target, *ex.negatives], fingerprint) for ex in examples]
    found = [
        (int(u), [int(i) for i in items], f)
        for u, items, f in reference_logprobs[["user_idx", "items", "sft_adapter"]].itertuples(index=False)
    ]
    if found != expected:
        raise ValueError(
            "dmpo.reference_logprobs was not computed from this SFT adapter and these examples: "
            "re-run the node dmpo.compute_reference_logprobs"
        )
    reference = torch.tensor(np.stack(reference_logprobs["logprob"].to_numpy()), dtype=torch.float32)
    model, log = context.preference(sft, reference, loss, _model_name(loss, training_examples, dataset), len(examples))
    return model.to_artifact(), log


def train_dmpo(*inputs) -> tuple[dict, pd.DataFrame]:
    """``dmpo.adapter``: DMPO's loss (inputs as ``train_preference``'s)."""
    return train_preference(*inputs, loss="dmpo")


def train_sdpo(*inputs) -> tuple[dict, pd.DataFrame]:
    """``dmpo.sdpo_adapter``: S-DPO's loss."""
    return train_preference(*inputs, loss="sdpo")


def score_dmpo(*inputs) -> pd.DataFrame:
    """``sft_scores`` / ``dmpo_scores`` / ``sdpo_scores``: each shared candidate's title log-likelihood
    (per token where the adapter says so), with the ``model`` column; a user without a summary at a
    cutoff is shown none."""
    scores, name = score_adapter(*inputs, every_summary=False)
    return scores.assign(model=name)


def few_shot_sweep(training_examples, training_items, user_sequences, item_catalog, user_summaries, eval_candidates,
                   dmpo: dict, evaluation: dict, backbone: dict, dataset: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
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
        examples = _examples(training_examples, n)
        reference = reference_logprobs(sft, examples, context.train_titles)
        model, log = context.preference(sft, reference, "dmpo", _model_name(f"dmpo_u{n}", training_examples, dataset), n)
        scores.append(context.score(model, model.config.meta["model"]))
        logs += [sft_log, log]
    if not scores:  # no sweep configured: empty tables of the right shape
        empty = pd.Series(dtype=str)
        return sampled_rows([], context.rows.head(0)).assign(model=empty, backbone_dtype=empty), training_log("", [])
    return pd.concat(scores, ignore_index=True), pd.concat(logs, ignore_index=True)


def collect_models(*tables: pd.DataFrame) -> pd.DataFrame:
    """One table of several models' score tables, or of their training logs (each has a ``model`` column):
    ``dmpo_transfer_scores`` and ``dmpo_transfer_training_log`` (``sft_from_ml-1m``, ``dmpo_from_ml-1m``, ...)."""
    return pd.concat(tables, ignore_index=True)


def create_variant_pipeline() -> Pipeline:
    """The ``dmpo`` namespace (in-domain, with the few-shot sweep) and ``dmpo_transfer`` (the same
    models trained on ``dmpo_transfer.train_dataset``; left out of the default run, tag ``transfer``)."""
    return _models_pipeline("dmpo") + _models_pipeline("dmpo_transfer").tag(TRANSFER)


def _models_pipeline(section: str) -> Pipeline:
    """SFT, DMPO and S-DPO (and, in-domain, the few-shot sweep) under the parameters ``section``, in the
    namespace of that name."""
    transfer = section != "dmpo"
    tables = ["user_sequences", "item_catalog", "user_summaries", "eval_candidates"]
    examples = ["training_examples", "training_items"]
    params = [f"params:{section}", "params:evaluation", "params:backbone", "params:dataset"]
    nodes = [
        Node(
            make_training_examples,
            ["user_sequences", "item_catalog", "user_summaries", f"params:{section}", "params:dataset",
             "params:data_processing", "params:evaluation"],
            examples,
            name="make_training_examples",
        ),
        Node(train_sft, [*examples, *tables, *params], ["sft_adapter", "sft_training_log"], name="train_sft"),
        Node(
            compute_reference_logprobs,
            ["sft_adapter", *examples, f"params:{section}", "params:backbone"],
            "reference_logprobs",
            name="compute_reference_logprobs",
        ),
        Node(
            score_dmpo,
            ["sft_adapter", *tables, "params:evaluation", "params:backbone"],
            "sft_scores",
            name="score_sft",
        ),
    ]
    for loss, train, adapter in (("dmpo", train_dmpo, "adapter"), ("sdpo", train_sdpo, "sdpo_adapter")):
        nodes += [
            Node(
                train,
                ["sft_adapter", "reference_logprobs", *examples, *tables, *params],
                [adapter, f"{loss}_training_log"],
                name=f"train_{loss}",
            ),
            Node(
                score_dmpo,
                [adapter, *tables, "params:evaluation", "params:backbone"],
                f"{loss}_scores",
                name=f"score_{loss}",
            ),
        ]
    models = ("sft", "dmpo", "sdpo")
    if transfer:
        nodes += [
            Node(collect_models, [f"{m}_{kind}" for m in models], f"{section}_{kind}", name=f"collect_{kind}")
            for kind in ("scores", "training_log")
        ]
        outputs = {f"{section}_scores", f"{section}_training_log"}
    else:
        nodes.append(Node(
            few_shot_sweep,
            [*examples, *tables, *params],
            ["dmpo_few_shot_scores", "dmpo_few_shot_training_log"],
            name="few_shot_sweep",
        ))
        outputs = {f"{model}_{kind}" for model in (*models, "dmpo_few_shot") for kind in ("scores", "training_log")}
    return Pipeline(
        nodes,
        namespace=section,
        inputs=set(tables),
        outputs=outputs,
        parameters={f"params:{section}", "params:evaluation", "params:backbone", "params:dataset",
                    "params:data_processing"},
    )
