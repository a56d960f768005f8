"""alignment nodes: RA-Rec's tailored samples, the aligner's training, its aligned item embeddings and
its recommendations for the shared evaluation (model ``ra_rec``)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from llm_seqrec.data.alignment_samples import build_alignment_samples
from llm_seqrec.data.leakage import check_inputs_precede_targets
from llm_seqrec.data.schema import SPLITS, split_inputs
from llm_seqrec.evaluation.metrics import metrics_from_ranks
from llm_seqrec.evaluation.protocol import full_ranking_rows, llm_user_sample, sampled_rows
from llm_seqrec.llm.backbone import Backbone, load_backbone
from llm_seqrec.llm.device import choose_device
from llm_seqrec.llm.prompts import text_ids
from llm_seqrec.llm.summarize import item_lines
from llm_seqrec.models.aligner import AlignerConfig, IDAligner, PromptLayout, RARec, weights_fingerprint
from llm_seqrec.params import AlignmentParams, BackboneParams, EvaluationParams
from llm_seqrec.training import fit, seed_everything, training_log

logger = logging.getLogger(__name__)

EMBEDDING_COLUMNS = ["item_idx", "item_id", "title", "embedding"]


def make_alignment_samples(user_sequences: pd.DataFrame, item_catalog: pd.DataFrame, alignment: dict) -> pd.DataFrame:
    """``alignment_samples``: the tailored (history, target) training samples."""
    params = AlignmentParams.model_validate(alignment)
    return build_alignment_samples(
        user_sequences,
        item_catalog,
        n_samples=params.samples,
        history_items=params.history_items,
        length_buckets=params.length_buckets,
        popularity_buckets=params.popularity_buckets,
        overlap_field=params.overlap_field,
        max_word_df=params.max_word_df,
        seed=params.seed,
    )


def _id_table(id_item_embeddings: pd.DataFrame, n_items: int) -> torch.Tensor:
    """The ID model's item embeddings as ``[n_items + 1, d]`` (row 0, padding, zero)."""
    if sorted(id_item_embeddings["item_idx"].tolist()) != list(range(1, n_items + 1)):
        raise ValueError(f"id_item_embeddings must hold items 1..{n_items} of item_catalog once each")
    frame = id_item_embeddings.sort_values("item_idx")
    table = torch.from_numpy(np.stack(frame["embedding"].to_numpy()).astype(np.float32))
    return torch.cat([table.new_zeros(1, table.shape[1]), table])


def _prompt_settings(params: AlignmentParams) -> dict:
    return params.model_dump(include={"instruction", "readout", "history_items", "item_tokens"})


def _layout(llm: Backbone, item_catalog: pd.DataFrame, prompt: dict) -> PromptLayout:
    """Token ids of the instruction, the readout and every item's line (its text cut to ``item_tokens``)."""
    texts = dict(zip(item_catalog["item_idx"], item_catalog["text"], strict=True))
    lines = item_lines(texts, llm.tokenizer, prompt["item_tokens"])
    return PromptLayout(
        instruction=tuple(text_ids(llm.tokenizer, prompt["instruction"])),
        readout=tuple(text_ids(llm.tokenizer, prompt["readout"])),
        item_text={i: text_ids(llm.tokenizer, line + "\n") for i, line in lines.items()},
        placeholder=int(llm.tokenizer.pad_token_id),
        history_items=prompt["history_items"],
    )


def _load_llm(backbone: dict, training_device: str) -> Backbone:
    llm = load_backbone(**BackboneParams.model_validate(backbone).loader_kwargs())
    if llm.device != choose_device(training_device):
        raise ValueError(
            f"backbone.device puts the LLM on {llm.device} but alignment.training.device on "
            f"{choose_device(training_device)}: set both to the same device"
        )
    return llm


def _queries(model: RARec, histories: list[list[int]], batch_size: int, progress: bool, desc: str) -> torch.Tensor:
    return torch.cat([
        model.queries(histories[i : i + batch_size]).cpu()
        for i in tqdm(range(0, len(histories), batch_size), desc=desc, unit="batch", disable=not progress)
    ])


def train_aligner(
    alignment_samples: pd.DataFrame,
    user_sequences: pd.DataFrame,
    item_catalog: pd.DataFrame,
    id_item_embeddings: pd.DataFrame,
    alignment: dict,
    backbone: dict,
    evaluation: dict,
) -> tuple[dict, pd.DataFrame]:
    """``aligner_model`` and ``ra_rec_training_log``: train the aligner on the tailored samples with the
    LLM and ID table frozen (early stopping on validation NDCG@10, full ranking, over a seeded user
    sample), and check that neither moved. The config records the prompt, the budget and the
    frozen-weights check."""
    params = AlignmentParams.model_validate(alignment)
    exclude_seen = EvaluationParams.model_validate(evaluation).exclude_seen
    training = params.training
    histories = alignment_samples["history"].map(lambda h: [int(i) for i in h]).tolist()
    targets = torch.as_tensor(alignment_samples["target"].to_numpy(dtype=np.int64))
    if not histories:
        raise ValueError("alignment_samples is empty: no candidate shared a word with its history (see alignment.max_word_df)")
    check_inputs_precede_targets(
        user_sequences, alignment_samples["user_idx"], alignment_samples["position"], histories,
        targets=targets.tolist(), what="alignment_samples",
    )
    llm = _load_llm(backbone, training.device)
    prompt = _prompt_settings(params)
    layout = _layout(llm, item_catalog, prompt)
    n_items = int(item_catalog["item_idx"].max())
    id_table = _id_table(id_item_embeddings, n_items)

    seed_everything(training.seed)
    config = AlignerConfig(
        n_items=n_items,
        id_dim=int(id_table.shape[1]),
        hidden_size=llm.hidden_size,
        n_layers=len(llm.model.get_decoder().layers),
        n_prefix=len(layout.instruction),
        score_dim=params.score_dim,
    )
    aligner = IDAligner(config, id_table).to(llm.device)
    model = RARec(llm.model.get_decoder(), aligner, layout)
    model.initialise()
    trainable = aligner.trainable_parameters()
    logger.info("RA-Rec aligner: %d trainable parameters (LLM %s and ID table frozen)", trainable, llm.name)
    llm_before = weights_fingerprint(llm.model.state_dict().items())

    def make_batches(epoch: int, generator: torch.Generator) -> Iterator[dict]:
        order = torch.randperm(len(histories), generator=generator)
        for start in range(0, len(order), training.batch_size):
            rows = order[start : start + training.batch_size]
            batch = layout.batch([histories[r] for r in rows.tolist()])
            batch["target"] = targets[rows]
            batch["negatives"] = torch.randint(1, n_items + 1, (len(rows), params.n_negatives), generator=generator)
            yield batch

    valid = user_sequences
    if training.eval_users is not None and training.eval_users < len(user_sequences):
        sample = np.random.default_rng(training.seed).choice(len(user_sequences), training.eval_users, replace=False)
        valid = user_sequences.iloc[np.sort(sample)]

    def validate(_aligner: IDAligner) -> float:
        score_fn = lambda inputs: model.score_all(model.queries(inputs))  # noqa: E731
        ranks = full_ranking_rows(score_fn, valid, "valid", exclude_seen, batch_size=params.eval_batch_size)["rank"]
        return metrics_from_ranks(ranks.to_numpy(), [10], "full")["ndcg@10"]

    fingerprint = hashlib.sha256()
    for part in (targets, torch.as_tensor([i for h in histories for i in h]), id_table, torch.as_tensor(valid.index.to_numpy())):
        fingerprint.update(part.numpy().tobytes())
    run_config = {
        "aligner": config.to_dict(),
        "prompt": prompt,
        "backbone": llm.name,
        "loss": params.model_dump(include={"n_negatives", "infonce_weight", "infonce_temperature"}),
        "exclude_seen": exclude_seen,
        "data": fingerprint.hexdigest(),
    }
    result = fit(
        aligner,
        lambda _aligner, batch: model.loss(batch, params.infonce_weight, params.infonce_temperature),
        make_batches,
        validate,
        training,
        "aligner",
        run_config,
    )

    llm_unchanged = weights_fingerprint(llm.model.state_dict().items()) == llm_before
    id_unchanged = torch.equal(aligner.id_table.cpu(), id_table)
    logger.info("Frozen-weights check after training: LLM unchanged %s, ID table (SASRec item embeddings) unchanged %s",
                llm_unchanged, id_unchanged)
    if not (llm_unchanged and id_unchanged):
        raise RuntimeError("RA-Rec training changed frozen weights (the LLM or the ID table); only the aligner may train")
    # Epoch times (training and validation) are kept in the checkpoint, so a resumed run counts them all.
    minutes = sum(record["seconds"] for record in result.history) / 60
    logger.info("RA-Rec budget: %d samples, %d epochs, %.1f minutes of training and validation",
                len(histories), len(result.history), minutes)
    model = {
        "config": {
            "aligner": config.to_dict(),
            "prompt": prompt,
            "backbone": llm.name,
            "budget": {
                "samples": len(histories),
                "epochs": len(result.history),
                "best_epoch": result.best_epoch,
                "minutes": round(minutes, 2),
                "trainable_parameters": trainable,
            },
            "best_valid_ndcg@10": result.best_metric,
            "frozen_check": {"llm_sha256": llm_before, "llm_unchanged": llm_unchanged, "id_table_unchanged": id_unchanged},
        },
        "state_dict": aligner.to_artifact()["state_dict"],
    }
    return model, training_log("ra_rec", result.history, backbone_dtype=llm.dtype_name)


def _aligner(aligner_model: dict) -> IDAligner:
    return IDAligner.from_artifact({"config": aligner_model["config"]["aligner"], "state_dict": aligner_model["state_dict"]})


def export_aligned_item_embeddings(aligner_model: dict, item_catalog: pd.DataFrame) -> pd.DataFrame:
    """``aligned_item_embeddings``: every item's ID embedding mapped into the LLM's input space (p^(0))."""
    with torch.no_grad():
        table = _aligner(aligner_model).aligned_items()[1:].numpy().astype(np.float32)
    catalog = item_catalog.sort_values("item_idx")
    if catalog["item_idx"].tolist() != list(range(1, len(table) + 1)):
        raise ValueError("item_catalog does not hold the items the aligner was trained on")
    return pd.DataFrame({
        "item_idx": catalog["item_idx"].to_numpy(dtype=np.int64),
        "item_id": catalog["item_id"].astype(str).to_numpy(),
        "title": catalog["title"].astype(str).to_numpy(),
        "embedding": list(table),
    }, columns=EMBEDDING_COLUMNS)


def score_ra_rec(
    aligner_model: dict,
    user_sequences: pd.DataFrame,
    item_catalog: pd.DataFrame,
    eval_candidates: pd.DataFrame,
    alignment: dict,
    backbone: dict,
    evaluation: dict,
) -> pd.DataFrame:
    """``ra_rec_scores``: on the LLM user sample, both splits, full ranking over all items and the
    sampled protocol on ``eval_candidates`` (one LLM pass per user and split serves both)."""
    params = AlignmentParams.model_validate(alignment)
    eval_params = EvaluationParams.model_validate(evaluation)
    llm = _load_llm(backbone, params.training.device)
    if llm.name != aligner_model["config"]["backbone"]:
        raise ValueError(f"aligner_model was trained on backbone {aligner_model['config']['backbone']}, not {llm.name}")
    model = RARec(llm.model.get_decoder(), _aligner(aligner_model).to(llm.device).eval(),
                  _layout(llm, item_catalog, aligner_model["config"]["prompt"]))
    users = llm_user_sample(user_sequences, eval_params.llm_user_sample, eval_params.seed)
    sampled_users = user_sequences[user_sequences["user_idx"].isin(users)].reset_index(drop=True)
    row_of = pd.Series(np.arange(len(sampled_users)), index=sampled_users["user_idx"].to_numpy())
    tables = []
    with torch.no_grad():
        for split in SPLITS:
            inputs, _ = split_inputs(sampled_users, split)
            check_inputs_precede_targets(sampled_users, sampled_users["user_idx"], split, inputs,
                                         what=f"ra_rec queries at {split}")
            queries = _queries(model, inputs, params.eval_batch_size, eval_params.progress, f"ra_rec {split}")
            scores = model.score_all(queries.to(llm.device)).cpu()
            # One batch holding every sampled user, so the precomputed score rows line up with them.
            tables.append(full_ranking_rows(lambda _inputs: scores, sampled_users, split, eval_params.exclude_seen,
                                            batch_size=len(sampled_users)))
            rows = eval_candidates[(eval_candidates["split"] == split) & eval_candidates["user_idx"].isin(users)]
            rows = rows.reset_index(drop=True)
            candidate_scores = [
                scores[row_of[u], torch.as_tensor(np.asarray(c, dtype=np.int64))].double().numpy()
                for u, c in zip(rows["user_idx"], rows["candidates"], strict=True)
            ]
            tables.append(sampled_rows(candidate_scores, rows))
    return pd.concat(tables, ignore_index=True).assign(backbone_dtype=llm.dtype_name)
